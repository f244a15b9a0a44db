from __future__ import annotations

import stat
from pathlib import Path

from usdcm.privacy import PathRedactor, ProjectSecret, phi_tokens


def test_secret_is_created_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / ".usdcm" / "secret"
    first = ProjectSecret.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ProjectSecret.load_or_create(path)
    assert first.pseudonym("PID1") == again.pseudonym("PID1")
    other = ProjectSecret.load_or_create(tmp_path / "other")
    assert other.pseudonym("PID1") != first.pseudonym("PID1")


def test_namespaces_separate_pseudonyms() -> None:
    secret = ProjectSecret(b"x" * 32)
    assert secret.pseudonym("123") != secret.pseudonym("123", namespace="accession")


def test_redactor_hides_folders_named_after_patients() -> None:
    secret = ProjectSecret(b"x" * 32)
    redactor = PathRedactor(secret)
    redactor.add(
        phi_tokens(patient_id="ID555", accession_number="", patient_name="Moe^Zed", birth_date="")
    )
    redacted = redactor.redact("export/MOE_ZED_1970/ID555/IM0001")
    assert "MOE" not in redacted and "ID555" not in redacted
    assert redacted.startswith("export/redacted-") and redacted.endswith("/IM0001")
    # only hashes are kept, and a new redactor from them behaves the same
    clone = PathRedactor(secret, redactor.hashed)
    assert clone.redact("export/MOE_ZED_1970/ID555/IM0001") == redacted
    assert all("MOE" not in h for h in redactor.hashed)
