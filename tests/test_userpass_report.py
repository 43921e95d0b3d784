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


def test_uids_ending_a_sentence_or_a_file_name_are_left_out():
    uid = "1.2.840.113619.2.55.3.604688119.868.1249343483.318"
    assert redact(f"series {uid}.", [], identifiers=False) == "series <UID>."
    # Files fetched from a PACS are named after their SOP Instance UID.
    assert redact(f"read <x>/{uid}.dcm", [], identifiers=False) == "read <x>/<UID>.dcm"
    assert redact("xaimed 0.1.0 and torch 2.13.0.", [], identifiers=False) == (
        "xaimed 0.1.0 and torch 2.13.0."
    )
