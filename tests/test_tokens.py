"""Key tokens: shape, checksum, hashing."""

from partner_api import tokens


def test_new_token_has_prefix_length_and_valid_checksum():
    token = tokens.new_token()
    assert token.startswith("vc_")
    assert len(token) == tokens.TOKEN_LENGTH
    assert tokens.is_well_formed(token)


def test_tokens_are_unique():
    assert len({tokens.new_token() for _ in range(200)}) == 200


def test_a_single_mistyped_character_fails_the_checksum():
    token = tokens.new_token()
    position = 10
    replacement = "a" if token[position] != "a" else "b"
    mistyped = token[:position] + replacement + token[position + 1 :]
    assert not tokens.is_well_formed(mistyped)


def test_malformed_tokens_are_refused():
    good = tokens.new_token()
    for bad in [
        "",
        "vc_",
        good[:-1],
        good + "x",
        "xx_" + good[3:],
        good.replace("vc_", "VC_"),
        good[:5] + "!" + good[6:],
        None,
        12345,
    ]:
        assert not tokens.is_well_formed(bad)


def test_hash_is_sha256_hex_and_not_the_token():
    token = tokens.new_token()
    digest = tokens.hash_token(token)
    assert len(digest) == 64 and token not in digest
    assert digest == tokens.hash_token(token)
