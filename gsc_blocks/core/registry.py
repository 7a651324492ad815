"""One registry of codecs: names and header codec ids -> codecs.

Learned (analog) codecs are the model cards with a codec_id under the model
search path; digital codecs are classes registered here by name, and a name
may carry a variant after a dash ('separation-webp'). Header codec id 0 is
reserved for control frames (core/frame.py).
"""
from .codec import Codec
from .frame import CONTROL_CODEC_ID
from .jscc import JSCCCodec
from .models import CodecError, available_models, card_kind, check_card, load_card
from .separation import SeparationCodec
from .spic import CSpicCodec, SpicCodec
from .sqgan import SqganCodec

DIGITAL_CODECS = {cls.name: cls for cls in (SeparationCodec, SpicCodec, CSpicCodec, SqganCodec)}


def _cards_by_id(models_dir=None) -> dict[int, str]:
    """{codec id: model name} of the codec cards; a card that cannot be read is skipped here
    (it fails with its own message when that codec is asked for by name)."""
    ids = {}
    for name in available_models(models_dir):
        try:
            card = load_card(name, models_dir)
            if card_kind(card) != "codec":
                continue
            check_card(card, "codec")      # a broken card never shadows a good one's codec id
        except CodecError:
            continue
        if isinstance(card.get("codec_id"), int):
            ids.setdefault(card["codec_id"], name)
    return ids


def available_codecs(models_dir=None) -> list[str]:
    """Learned codecs (cards with a codec id), then the digital codecs."""
    return sorted(_cards_by_id(models_dir).values()) + sorted(DIGITAL_CODECS)


def make_codec(name: str, models_dir=None, options: dict | None = None) -> Codec:
    """A codec by name: a digital codec ('separation', 'separation-webp', 'spic-3',
    'sqgan-random'), or a model folder.
    options: a digital codec's own settings (C-SPIC's classes)."""
    base, _, variant = name.partition("-")
    if base in DIGITAL_CODECS:
        try:
            return DIGITAL_CODECS[base].create(variant, models_dir, options or {})
        except ValueError as err:
            raise CodecError(f"codec {name!r}: {err}") from None
    return JSCCCodec(name, models_dir)


def codec_for_id(codec_id: int, models_dir=None, options: dict | None = None) -> Codec:
    """The decoder side of a header's codec id; options as make_codec's (a digital codec's cbr)."""
    for cls in DIGITAL_CODECS.values():
        if cls.codec_id == codec_id:
            return cls.create("", models_dir, options or {})
    cards = _cards_by_id(models_dir)
    if codec_id == CONTROL_CODEC_ID or codec_id not in cards:
        raise CodecError(f"no codec has codec_id {codec_id} (the header's codec field); codecs: "
                         + ", ".join(f"{name} {cid}" for cid, name in sorted(
                             {**cards, **{c.codec_id: n for n, c in DIGITAL_CODECS.items()}}.items())))
    return JSCCCodec(cards[codec_id], models_dir)
