"""How strong a new passphrase must be: zxcvbn's estimate of the guesses needed to find it.

A stolen key slot can be attacked offline, as fast as the attacker can run vault's Argon2id
(64 MiB, 12 passes). At ten thousand guesses a second — a well-equipped attacker — 10^12 guesses
take about three years; that is the floor for every new passphrase slot (`init`, `key add`,
`key passwd`). zxcvbn (Dropbox's estimator, kept as the `zxcvbn` package) knows dictionaries,
names, keyboard patterns, dates and l33t substitutions, which a length rule does not. This
module is its only home. Pure: no storage, no terminal.
"""

from __future__ import annotations

MIN_GUESSES_LOG10 = 12.0
_ESTIMATED_CHARACTERS = 100  # zxcvbn is quadratic in length; longer passphrases are strong anyway


def weakness(passphrase: str, context: tuple[str, ...] = ()) -> str | None:
    """None when `passphrase` is strong enough; else one sentence saying why it is not.
    `context` holds words an attacker would try first (host name, repository location)."""
    # Imported here: its word lists are 13 MiB resident, and only commands that set a
    # passphrase need them (a restore's peak memory is measured against restic's).
    from zxcvbn import zxcvbn

    estimate = zxcvbn(passphrase[:_ESTIMATED_CHARACTERS], user_inputs=[c for c in context if c])
    guesses = float(estimate["guesses_log10"])
    if guesses >= MIN_GUESSES_LOG10:
        return None
    feedback = estimate.get("feedback") or {}
    hints = [feedback.get("warning") or "", *(feedback.get("suggestions") or [])]
    why = " ".join(h.rstrip(".") + "." for h in hints if h)
    return (
        f"the new passphrase is too weak: about 10^{guesses:.0f} guesses would find it, and "
        f"vault asks for at least 10^{MIN_GUESSES_LOG10:.0f} (years for an offline attacker "
        f"with a stolen key slot). {why} Use four or more random words, or 20 or more random "
        "characters from a password manager"
    ).replace("  ", " ")
