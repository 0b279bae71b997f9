"""The VAPID key setting: its three spellings, refusals that name the key and never show
it, and the tokens it signs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.webpush.pushservice import Received, check_vapid
from tidings.config import load_settings
from tidings.errors import ConfigError
from tidings.webpush.vapid import VapidKeyError, VapidSigner, generate_key, load_key

SECRET = "x" * 32


def pem(key: object) -> str:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_raw_pem_and_file_keys_load_to_the_same_public_key(tmp_path: Path) -> None:
    private, public = generate_key()
    key = load_key(private)
    path = tmp_path / "vapid.pem"
    path.write_text(pem(key))
    for spelling in (private, pem(key), str(path)):
        assert VapidSigner(load_key(spelling), "mailto:a@b.c").public_key == public


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("/no/such/file.pem", "neither PEM text"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not an unencrypted"),
    ],
)
def test_unusable_keys_are_refused(value: str, reason: str) -> None:
    with pytest.raises(VapidKeyError, match=reason):
        load_key(value)


def test_other_curves_and_rsa_are_refused() -> None:
    for key in (ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)):
        with pytest.raises(VapidKeyError, match="P-256"):
            load_key(pem(key))


def test_tokens_carry_aud_exp_sub_and_are_reused() -> None:
    private, public = generate_key()
    signer = VapidSigner(load_key(private), "https://example.com/contact")
    header = signer.authorization("https://push.example.net")
    assert signer.authorization("https://push.example.net") == header
    assert signer.authorization("https://other.example.net") != header
    received = Received(0.0, "/", {"Authorization": header}, b"")
    check_vapid(received, "https://push.example.net", public, "https://example.com/contact")


def settings(**web_push: object) -> None:
    load_settings(
        overrides={"auth.hmac_secret": SECRET, **{f"web_push.{k}": v for k, v in web_push.items()}}
    )


def test_config_validation_names_the_key_and_hides_the_value() -> None:
    private, _ = generate_key()
    settings(vapid_private_key=private, vapid_subject="mailto:ops@example.com")
    settings(vapid_private_key=private, vapid_subject="https://example.com")
    with pytest.raises(ConfigError) as bad_key:
        settings(vapid_private_key="s3cret-but-wrong", vapid_subject="mailto:ops@example.com")
    assert bad_key.value.key == "web_push.vapid_private_key"
    assert "s3cret" not in str(bad_key.value)
    for subject in ("", "ops@example.com", "http://example.com", "mailto:nobody"):
        with pytest.raises(ConfigError) as bad_subject:
            settings(vapid_private_key=private, vapid_subject=subject)
        assert bad_subject.value.key == "web_push.vapid_subject"
    with pytest.raises(ConfigError) as urgency:
        settings(urgency="urgent")
    assert urgency.value.key == "web_push.urgency"
    with pytest.raises(ConfigError) as delay:
        settings(retry_backoff="10s", max_retry_delay="1s")
    assert delay.value.key == "web_push.max_retry_delay"
    with pytest.raises(ConfigError) as retries:
        settings(retries=11)
    assert retries.value.key == "web_push.retries"


def test_a_namespace_asking_for_web_push_needs_the_key(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[namespaces]]\nname = "inbox"\nweb_push = true\n')
    with pytest.raises(ConfigError) as error:
        load_settings(path, overrides={"auth.hmac_secret": SECRET})
    assert error.value.key == "namespaces[0].web_push"
    path.write_text("[channels]\nweb_push = true\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, overrides={"auth.hmac_secret": SECRET})
    assert error.value.key == "channels.web_push"


def test_the_key_is_masked_in_the_effective_settings() -> None:
    from tidings.config import masked

    private, _ = generate_key()
    s = load_settings(
        overrides={
            "auth.hmac_secret": SECRET,
            "web_push.vapid_private_key": private,
            "web_push.vapid_subject": "mailto:ops@example.com",
        }
    )
    assert masked(s)["web_push"]["vapid_private_key"] == "***"
    assert private not in repr(masked(s))
