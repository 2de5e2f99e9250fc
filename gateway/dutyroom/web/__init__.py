"""``campusguard dutyroom``: the police duty room in a browser.

One aiohttp server per duty room: it reads everything from MQTT (:mod:`.intake`, folding
messages with the console's :class:`gateway.dutyroom.board.Board`), keeps its own SQLite
(:mod:`.db`: history, accounts, sessions, audit), signs acknowledgements with the duty
room's key in the operator's name, and serves server-rendered pages (:mod:`.views`)
that a small script keeps live over server-sent events (:mod:`.app`).
"""
