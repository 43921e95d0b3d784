"""With ``report.identifiers`` false the report leaves out Series Instance UIDs (README), also
where a DICOM case's failure message names its series."""

from __future__ import annotations

from xaimed.report.content import redact


def test_series_uids_in_messages_are_left_out_unless_identifiers():
    message = (
        "case study-1e40a7c2552a, series 2.25.120086210593993366344066845349532289986#2: IM1 has "
        "a VOI window of width 0; xaimed 0.1.0 read /data/p/IM1 "
        "(SOP class 1.2.840.10008.5.1.4.1.1.1)"
    )
    assert redact(message, ["/data/p/IM1"], identifiers=False) == (
        "case study-1e40a7c2552a, series <UID>#2: IM1 has a VOI window of width 0; xaimed 0.1.0 "
        "read <source> (SOP class <UID>)"
    )
    assert redact(message, ["/data/p/IM1"], identifiers=True) == message
