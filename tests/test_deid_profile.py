"""De-identification to the whole Basic Profile: every row of PS3.15 Table E.1-1 (shipped as
data) is applied, at the top level and nested in a sequence, with the action the table gives;
SR content trees stay valid; coded terms stay intact; the nested patient identity goes too."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from vault.dicom import profile
from vault.dicom.deidentify import Deidentifier

TABLE = profile.table()
RAW = json.loads(
    resources.files("vault.dicom").joinpath("data", profile.TABLE_FILE).read_text("utf-8")
)
# A sequence the table does not name: where nested copies of every attribute are put.
HOLDER = 0x00540016  # Radiopharmaceutical Information Sequence
assert TABLE.rule(HOLDER) is None


def test_the_shipped_table_is_table_e1_1_whole() -> None:
    """Every row parses, and the rows the audit found kept are there with their actions."""
    additions = json.loads(
        resources.files("vault.dicom").joinpath("data", profile.ADDITIONS_FILE).read_text("utf-8")
    )
    assert len(RAW) >= 450 and len(TABLE.rules) == len(RAW) + len(additions) >= 620
    wanted = {
        0x00080201: "X",  # Timezone Offset From UTC
        0x001021C0: "X",  # Pregnancy Status
        0x00324000: "X",  # Study Comments
        0x00880200: "X",  # Icon Image Sequence
        0xFFFCFFFC: "X",  # Data Set Trailing Padding
        0x0040A027: "D",  # Verifying Organization
        0x00120060: "Z",  # Clinical Trial Coordinating Center Name
    }
    for tag, basic in wanted.items():
        rule = TABLE.rule(tag)
        assert rule is not None and basic in rule.basic.split("/"), (hex(tag), rule)
    for tag in (0x00180010, 0x00400555, 0x300A0002, 0x300A0003, 0x300A0016, 0x300A00B2):
        assert TABLE.rule(tag) is not None, hex(tag)
    assert TABLE.rule(0x0008010C) is None  # Coding Scheme UID: not in Annex E, kept
    assert TABLE.rule(0x00091001) is not None  # private: the odd-group row


def _example_tag(rule: profile.Rule) -> int:
    if rule.private:
        return 0x00091010
    if rule.mask == 0xFFFFFFFF:
        return rule.value
    return rule.value | (0x00001000 & ~rule.mask & 0xFFFF)  # e.g. (50XX,XXXX) -> (5000,1000)


def _vr(tag: int) -> str:
    if (tag >> 16) & 1:
        return "LO"
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "LO"


def _value(vr: str, n: int) -> Any:
    texts = {
        "DA": "20200102",
        "DT": "20200102030405",
        "TM": "030405",
        "AS": "042Y",
        "DS": "7.5",
        "IS": "7",
        "UI": f"1.2.826.0.1.3680043.8.498.{n}",
        "CS": "SECRET",
        "AE": "SECRETAE",
        "UR": "http://secret.example/x",
        "PN": "SECRET^PERSON",
    }
    if vr in texts:
        return texts[vr]
    if vr in ("FL", "FD"):
        return 7.5
    if vr in ("SL", "SS", "UL", "US", "SV", "UV"):
        return 7
    if vr == "AT":
        return 0x00100010
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b"SECRETBYTES\x00"
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "SECRET^NESTED"
        return Sequence([item])
    return f"SECRET-{n}"


def _dataset(elements: list[tuple[int, str, Any]]) -> pydicom.FileDataset:
    ds = Dataset()
    for tag, vr, value in elements:
        ds.add_new(tag, vr, value)
    holder = Dataset()
    for tag, vr, value in elements:
        holder.add_new(tag, vr, value)
    ds.add_new(HOLDER, "SQ", Sequence([holder]))
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta = meta
    return ds  # type: ignore[return-value]


CASES = [(rule, _example_tag(rule)) for rule in TABLE.rules]


@pytest.mark.parametrize("rule,tag", CASES, ids=[r.tag for r, _ in CASES])
def test_every_row_of_the_table_gets_its_action_at_every_level(
    rule: profile.Rule, tag: int
) -> None:
    vr = _vr(tag)
    if tag >> 16 & 1:  # a private element needs its creator
        elements = [(0x00090010, "LO", "VENDOR"), (tag, vr, _value(vr, 1))]
    else:
        elements = [(tag, vr, _value(vr, 1))]
    ds = _dataset(elements)
    original = _value(vr, 1)
    Deidentifier().apply(ds)
    for level in (ds, ds[HOLDER].value[0]):
        _assert_action(rule, level, tag, vr, original)


def _assert_action(rule: profile.Rule, ds: Dataset, tag: int, vr: str, original: Any) -> None:
    action = rule.action
    present = tag in ds
    if action == profile.REMOVE:
        assert not present, f"{rule.tag} {rule.name}: X but kept"
        return
    assert present, f"{rule.tag} {rule.name}: {action} but removed"
    value = ds[tag].value
    if action == profile.KEEP:
        assert value == original
    elif vr == "SQ":
        # Z empties a sequence; D and U* keep it with every item cleaned by the same rules.
        names = [str(item.get("PatientName", "")) for item in value]
        assert "SECRET^NESTED" not in names
    elif action == profile.ZERO:
        assert value in ("", None, b"", "ANONYMOUS") or str(value).startswith("DEID-")
    elif action in (profile.DUMMY, profile.UID, profile.UID_ALL):
        assert value not in ("", None) or vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "UR")
        assert value != original, f"{rule.tag} {rule.name}: {action} kept the original"


def test_uids_are_replaced_consistently_and_coded_terms_stay_intact() -> None:
    uid = "1.2.826.0.1.3680043.8.498.77"
    code = Dataset()
    code.CodeValue = "T-11170"
    code.CodingSchemeDesignator = "SRT"
    code.CodingSchemeUID = "2.16.840.1.113883.6.96"
    code.CodeMeaning = "Mandible"
    ds = _dataset([(0x0020000D, "UI", uid)])
    ds.AnatomicRegionSequence = Sequence([code])
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = uid
    ds.ReferencedImageSequence = Sequence([ref])
    deid = Deidentifier()
    deid.apply(ds)
    new = ds.StudyInstanceUID
    assert new != uid and ds[HOLDER].value[0].StudyInstanceUID == new
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new
    kept = ds.AnatomicRegionSequence[0]
    assert (kept.CodeValue, kept.CodingSchemeUID, kept.CodeMeaning) == (
        "T-11170",
        "2.16.840.1.113883.6.96",
        "Mandible",
    )


def test_a_structured_report_keeps_a_valid_content_tree() -> None:
    def item(value_type: str, **values: Any) -> Dataset:
        it = Dataset()
        it.RelationshipType = "CONTAINS"
        it.ValueType = value_type
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator = "121071", "DCM"
        concept.CodeMeaning = "Finding"
        it.ConceptNameCodeSequence = Sequence([concept])
        for keyword, value in values.items():
            setattr(it, keyword, value)
        return it

    report = _dataset([(0x00100010, "PN", "SMITH^JOHN")])
    nested = item("CONTAINER", ContinuityOfContent="SEPARATE")
    nested.ContentSequence = Sequence([item("TEXT", TextValue="John Smith, 3 Elm St")])
    report.ContentSequence = Sequence(
        [
            item("TEXT", TextValue="Patient John Smith reports pain"),
            item("PNAME", PersonName="SMITH^JOHN"),
            item("DATE", Date="20200102"),
            item("UIDREF", UID="1.2.826.0.1.3680043.8.498.99"),
            nested,
        ]
    )
    Deidentifier().apply(report)
    tree = report.ContentSequence
    assert [i.ValueType for i in tree] == ["TEXT", "PNAME", "DATE", "UIDREF", "CONTAINER"]
    assert tree[0].TextValue and "Smith" not in tree[0].TextValue  # dummied, not removed
    assert tree[1].PersonName and "SMITH" not in str(tree[1].PersonName)
    assert tree[2].Date and tree[2].Date != "20200102"
    assert tree[3].UID != "1.2.826.0.1.3680043.8.498.99"
    assert "Smith" not in tree[4].ContentSequence[0].TextValue
    assert tree[0].ConceptNameCodeSequence[0].CodeMeaning == "Finding"


def test_the_nested_patient_identity_goes_too() -> None:
    ds = _dataset([(0x00100010, "PN", "SMITH^JOHN"), (0x00100020, "LO", "MRN-12345")])
    source = Dataset()
    source.PatientName = "SMITH^JOHN"
    source.PatientID = "MRN-12345"
    ds.SourcePatientGroupIdentificationSequence = Sequence([source])
    Deidentifier().apply(ds)
    values = [str(e.value) for e in ds.iterall() if e.VR != "SQ"]
    assert not any("SMITH" in v or "MRN-12345" in v for v in values)


def test_dates_shift_under_the_modified_dates_option() -> None:
    ds = _dataset([(0x00080020, "DA", "20200110"), (0x00080030, "TM", "101500")])
    Deidentifier(shift_days=-10).apply(ds)
    assert ds.StudyDate == "20191231" and ds.StudyTime == "101500"
    assert ds.DeidentificationMethodCodeSequence[1].CodeValue == "113107"


def test_the_shipped_table_is_the_copy_its_source_note_names() -> None:
    """The table is data from the standard, never edited here: its hash is the one SOURCE.md
    records, so a change to it is a deliberate update of the edition."""
    import hashlib

    note = resources.files("vault.dicom").joinpath("data", "SOURCE.md").read_text("utf-8")
    for name in (profile.TABLE_FILE, profile.ADDITIONS_FILE):
        data = resources.files("vault.dicom").joinpath("data", name).read_bytes()
        assert hashlib.sha256(data).hexdigest() in note, name


def test_the_file_meta_group_is_rebuilt_without_ae_titles_or_private_information() -> None:
    ds = _dataset([(0x00100010, "PN", "SMITH^JOHN")])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.42"
    ds.file_meta.SourceApplicationEntityTitle = "SMITHPAN"
    ds.file_meta.add_new(0x00020100, "UI", "1.2.3.4")  # Private Information Creator UID
    ds.file_meta.add_new(0x00020102, "OB", b"SMITH JOHN 1970")
    Deidentifier().apply(ds)
    meta = ds.file_meta
    assert "SourceApplicationEntityTitle" not in meta and 0x00020102 not in meta
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID != "1.2.826.0.1.3680043.8.498.42"


def test_a_dummy_sequence_keeps_no_code_meaning_or_person_id() -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "CLINIC-7", "L"
    code.CodeMeaning = "Smile Dental Clinic, Springfield"
    ds = _dataset([])
    ds.InstitutionCodeSequence = Sequence([code])  # X/Z/D: a dummy
    Deidentifier().apply(ds)
    text = str(ds)
    assert "Smile" not in text and "CLINIC-7" not in text


def test_attributes_of_newer_editions_still_go() -> None:
    """Instance Creation Date, Station AE Title, a text object's value, an acquisition UID:
    rows that editions newer than the base copy add (the additions file), applied like the
    rest; an SOP Class UID stays."""
    originals = {
        0x00080012: ("DA", "20200102"),  # Instance Creation Date
        0x00080017: ("UI", "1.2.826.0.1.3680043.8.498.4711"),  # Acquisition UID
        0x00080055: ("AE", "SMITHPAN"),  # Station AE Title
        0x00700006: ("ST", "SMITH JOHN"),  # Unformatted Text Value
    }
    ds = _dataset([(tag, vr, value) for tag, (vr, value) in originals.items()]
                  + [(0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.2")])  # fmt: skip
    Deidentifier().apply(ds)
    for level in (ds, ds[HOLDER].value[0]):
        for tag, (_vr, value) in originals.items():
            assert tag not in level or level[tag].value != value, hex(tag)
        assert level[0x00080016].value == "1.2.840.10008.5.1.4.1.1.2"


def _unlisted(vr: str) -> int:
    """A standard attribute of VR `vr` that neither table names."""
    from pydicom.datadict import DicomDictionary

    for tag, entry in sorted(DicomDictionary.items()):
        if entry[0] == vr and TABLE.rule(tag) is None and entry[4] and "Retired" not in entry[3]:
            return int(tag)
    raise AssertionError(f"no unlisted {vr} attribute")


def test_attributes_no_edition_names_are_treated_by_their_kind() -> None:
    """What no table names: names, dates, AE titles and free text go, instance UIDs are
    replaced, codes stay (the safety net under the data)."""
    cases = {vr: _unlisted(vr) for vr in ("PN", "DA", "AE", "LT", "UI")}
    ds = _dataset([(tag, vr, _value(vr, 9)) for vr, tag in cases.items()])
    Deidentifier().apply(ds)
    for vr, tag in cases.items():
        value = ds[tag].value if tag in ds else None
        if vr == "UI" and not _class_uid(tag):
            assert value != _value(vr, 9)
        elif vr != "UI":
            assert value in ("", None), (vr, hex(tag), value)


def _class_uid(tag: int) -> bool:
    from pydicom.datadict import keyword_for_tag

    keyword = keyword_for_tag(tag)
    return keyword.endswith("ClassUID") or "CodingScheme" in keyword


@pytest.mark.parametrize(
    "attributes",
    [
        {"BurnedInAnnotation": ["NO", "YES"]},
        {"BurnedInAnnotation": "yes "},
        {"RecognizableVisualFeatures": "YES", "BurnedInAnnotation": "NO"},
        {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.104.1"},  # an encapsulated PDF
    ],
)
def test_burned_in_text_is_judged_closed(attributes: dict[str, Any]) -> None:
    from vault.dicom.deidentify import burned_in

    ds = Dataset()
    ds.Modality = "CT"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    assert burned_in(ds).suspected


def test_an_overlay_goes_whole() -> None:
    ds = _dataset(
        [
            (0x60000010, "US", 16),  # Overlay Rows
            (0x60000022, "LO", "SMITH JOHN L side"),  # Overlay Description
            (0x60001500, "LO", "SMITH"),  # Overlay Label
            (0x60003000, "OW", b"\x01\x00" * 8),  # Overlay Data
        ]
    )
    Deidentifier().apply(ds)
    assert not [e for e in ds.iterall() if 0x6000 <= e.tag.group <= 0x601E]
