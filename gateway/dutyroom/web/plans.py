"""Action plans: the steps a duty room works through, per alarm kind.

Each step is ticked by an operator with the time (kept in the duty room's database). The
plans are the duty room's procedure, not the gateway's: they live here, and a site
whose procedure differs gets its own file later without touching the alarm path.
"""

from __future__ import annotations

PLANS: dict[str, tuple[str, ...]] = {
    "panic": (
        "Dispatch the nearest patrol car to the place (调派最近的巡逻车)",
        "Call the owner (致电持有人)",
        "Tell the school's security lead (通知学校安全负责人)",
        "Patrol on site: report what was found (巡逻到场并报告)",
    ),
    "duress": (
        "Do NOT call the owner: the holder is under duress (勿致电持有人：被胁迫)",
        "Dispatch two patrol cars, silent approach (调派两辆巡逻车，静默接近)",
        "Tell the school's security lead (通知学校安全负责人)",
        "Patrol on site: report what was found (巡逻到场并报告)",
    ),
    "silent": (
        "Do NOT call the owner (勿致电持有人)",
        "Dispatch the nearest patrol car, silent approach (调派最近的巡逻车，静默接近)",
        "Patrol on site: report what was found (巡逻到场并报告)",
    ),
    "medical": (
        "Call the ambulance (120) to the place (呼叫120救护车)",
        "Call the owner (致电持有人)",
        "Dispatch the nearest patrol car (调派最近的巡逻车)",
    ),
    "fire": (
        "Call the fire brigade (119) to the place (呼叫119消防)",
        "Tell the school's security lead: evacuate (通知学校安全负责人：疏散)",
        "Dispatch the nearest patrol car (调派最近的巡逻车)",
    ),
}


def plan_for(kind: str) -> tuple[str, ...]:
    """The steps for an alarm of ``kind`` (a panic's for a kind without its own)."""
    return PLANS.get(kind, PLANS["panic"])
