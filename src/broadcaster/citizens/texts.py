"""The SMS texts the service sends citizens of its own accord, in Danish and English.

Each starts with the organisation's name (BROADCASTER_ORGANISATION), so a citizen knows who
writes. Danish is the fallback for any other language. All fit one GSM-7 segment with a name of
up to about 30 characters.
"""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "da": {
        "code": "{org}: Din kode er {code}. Den gælder i {minutes} minutter. "
        "Fik du den uden at bede om den, så se bort fra den.",
        "stop": "{org}: Du er afmeldt og får ikke flere beskeder. Skriv START for at komme igen.",
        "start": "{org}: Du er tilmeldt igen og får beskeder fra politiet i dine områder. "
        "Skriv STOP for at afmelde.",
        "start_nothing": "{org}: Du har ingen områder endnu. Skriv TILMELD og dit postnummer, "
        "fx TILMELD 3400.",
        "help": "{org}: Beskeder fra politiet om dit område. TILMELD 3400 tilmelder postnummer "
        "3400, STOP afmelder, START tilmelder igen. Tip? Svar på beskeden.",
        "join": "{org}: Du er tilmeldt postnummer {postal_code} og får beskeder fra politiet "
        "om området. Skriv STOP for at afmelde.",
        "join_unknown": "{org}: Vi kender ikke postnummer {postal_code} i vores område. "
        "Skriv fx TILMELD 3400.",
    },
    "en": {
        "code": "{org}: Your code is {code}. It is valid for {minutes} minutes. "
        "If you did not ask for it, ignore it.",
        "stop": "{org}: You are unsubscribed and will get no more messages. Send START to rejoin.",
        "start": "{org}: You are subscribed again and will get police messages for your areas. "
        "Send STOP to leave.",
        "start_nothing": "{org}: You have no areas yet. Send JOIN and your postal code, "
        "e.g. JOIN 3400.",
        "help": "{org}: Police messages about your area. JOIN 3400 subscribes postal code 3400, "
        "STOP leaves, START rejoins. A tip? Reply to the message.",
        "join": "{org}: You are subscribed to postal code {postal_code} and will get police "
        "messages about it. Send STOP to leave.",
        "join_unknown": "{org}: We do not know postal code {postal_code} in our area. "
        "Send e.g. JOIN 3400.",
    },
}
FALLBACK = "da"


def text(key: str, language: str, organisation: str, **values: object) -> str:
    """The text `key` in `language` (Danish when there is none), filled in."""
    texts = TEXTS.get(language, TEXTS[FALLBACK])
    return texts[key].format(org=organisation, **values)
