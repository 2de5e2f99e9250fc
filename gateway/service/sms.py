"""SMS to the people on the ladders, wired into the gateway service (gateway/notify/).

The modem's task, the event hook, the queue's retention and the ``sms_failed`` event.
"""

from __future__ import annotations

from gateway.notify.modem import Modem
from gateway.notify.pager import SitePager
from gateway.notify.queue import Sms, SmsQueue
from gateway.notify.sender import SmsSender
from gateway.service.assembly import Gateway


def attach_sms(gw: Gateway) -> SitePager | None:
    """SMS to the people of each site's ladder through boards.yaml's modem (None: no sms:).

    The returned pager is what other ladders (patrols) call: ``pager.page(...)``.
    """
    settings = gw.config.sms
    if settings is None:
        return None
    queue = SmsQueue(gw.store.conn)

    def failed(sms: Sms, at: float) -> None:
        gw.outlet.event(
            site=sms.site,
            kind="sms_failed",
            at=at,
            detail={
                "reason": sms.reason,
                "ref": sms.ref,
                "people": [p.name for p in sms.people],
                "text": sms.text,
            },
        )

    sender = SmsSender(
        queue,
        Modem(settings.port, settings.baud),
        gw.clock,
        retries=settings.retries,
        retry_s=float(settings.retry_s),
        delivery_timeout_s=settings.delivery_timeout_min * 60.0,
        on_failed=failed,
        transaction=gw.store.transaction,
    )
    pager = SitePager(gw.config, queue, settings, wake=sender.wake)
    gw.pipeline.event_hooks.append(pager.on_event)

    def prune(before: float) -> int:
        with gw.store.transaction():
            return queue.prune(before)

    gw.attach_service("sms", sender.run, prune)
    return pager
