"""runner.redaction: each encoding of a secret that a tool might print, and the order secrets are replaced in."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from runner.redaction import REDACTED, Redactor, encodings, url_credentials

# Chosen so every form differs from the others: standard base64 has "+" and "/" (URL-safe has "-" and "_"),
# and both end in "=" padding (the length is not a multiple of 3); percent-encoding changes "/", "?" and "&".
TOKEN = "xoxb-1?>?&/~token"
RAW = TOKEN.encode()
FORMS = {
    "plain": TOKEN,
    "base64": base64.b64encode(RAW).decode(),
    "base64, unpadded": base64.b64encode(RAW).decode().rstrip("="),
    "URL-safe base64": base64.urlsafe_b64encode(RAW).decode(),
    "URL-safe base64, unpadded": base64.urlsafe_b64encode(RAW).decode().rstrip("="),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
    "percent-encoded": quote(TOKEN, safe=""),
}


def test_the_token_makes_every_form_distinct():
    assert len(set(FORMS.values())) == len(FORMS)
    standard, urlsafe = FORMS["base64"], FORMS["URL-safe base64"]
    assert {"+", "/"} <= set(standard) and {"-", "_"} <= set(urlsafe) and standard.endswith("=")


def test_encodings_are_exactly_the_forms_a_tool_might_print():
    assert encodings(TOKEN) == set(FORMS.values())
    # Unpadded base64 ending in "X" (a token ending in "W", of a length a multiple of 3): only "=" is stripped.
    assert encodings("tok-W") >= {"dG9rLVc=", "dG9rLVc"} and encodings("tokW-W") >= {"dG9rVy1X"}
    assert "dG9rVy1" not in encodings("tokW-W")


@pytest.mark.parametrize("form", FORMS)
def test_each_form_is_redacted_alone_in_its_context(form):
    leaked = f"debug: {FORMS[form]} (end)"
    assert Redactor.of([TOKEN], encoded=True)(leaked) == f"debug: {REDACTED} (end)"


def test_without_encoded_only_the_secret_itself_is_redacted():
    plain = Redactor.of([TOKEN])
    assert plain(TOKEN) == REDACTED
    for form in set(FORMS) - {"plain"}:
        assert plain(FORMS[form]) == FORMS[form], form


def test_empty_secrets_are_ignored_and_the_replacement_can_be_chosen():
    assert not Redactor.of(["", ""], encoded=True)
    assert Redactor.of(["", "abc"], replacement="***")("xabcx") == "x***x"
    assert repr(Redactor.of(["abc", "def"])) == "Redactor(2 secrets)"


def test_the_longest_secret_is_replaced_first_so_no_part_of_it_is_left():
    redactor = Redactor.labelled({"tok": "[short]", "token-long": "[long]"})
    assert redactor("a token-long b tok") == "a [long] b [short]"
    assert Redactor.of(["ab", "abcd"])("abcd") == REDACTED  # not "[redacted]cd"


def test_a_union_replaces_both_sides_secrets_and_the_left_one_wins_a_conflict():
    left, right = Redactor.labelled({"s1": "[L]"}), Redactor.labelled({"s1": "[R]", "s2": "[2]"})
    assert (left | right)("s1 s2") == "[L] [2]"
    assert (right | left)("s1 s2") == "[R] [2]"


def test_deep_redacts_strings_at_any_depth_keys_too_and_leaves_other_values():
    deep = Redactor.of([TOKEN]).deep({TOKEN: [TOKEN, (1, TOKEN)], "n": 2, "none": None})
    assert deep == {REDACTED: [REDACTED, [1, REDACTED]], "n": 2, "none": None}


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("https://ghp_tok@github.com/o/r", f"https://{REDACTED}@github.com/o/r"),
        ("fetch FTP://user:pw@host/x now", f"fetch FTP://{REDACTED}@host/x now"),
        ("ssh://git:pw@host:22/r.git", f"ssh://git:{REDACTED}@host:22/r.git"),
        ("git+ssh://git:pw@host/r", f"git+ssh://git:{REDACTED}@host/r"),
        ("https://github.com/o/r@v1", "https://github.com/o/r@v1"),  # a ref after the path is no credential
        ("mail ada@example.com", "mail ada@example.com"),
    ],
)
def test_url_credentials_hides_the_user_or_password_of_every_url(text, clean):
    assert url_credentials(text) == clean
