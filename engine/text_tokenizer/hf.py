"""Hugging Face tokenizer files ↔ TextTokenizer (docs/FORMATS.md §6.1): `tokenizer_from_hf` reads a folder's
tokenizer.json (a BPE model and the steps around it), tokenizer_config.json and generation_config.json;
`write_hf_tokenizer` writes the two tokenizer files back, for a version-1 or a version-0 tokenizer."""

import json
from pathlib import Path
from typing import Any

from ..errors import PxglError
from ..outputs import atomic_write
from ..reading import in_folder, read_text
from ..tokenizer import Tokenizer, parse_tokenizer_json
from .added import AddedToken
from .hf_steps import (
    decoder_from_hf,
    decoder_to_hf,
    normalizer_from_hf,
    normalizer_to_hf,
    pre_tokenizer_from_hf,
    pre_tokenizer_to_hf,
)
from .model import ADDED_FLAGS, MAX_ADDED, MAX_IDS, MAX_MERGES_A_PIECE, TextTokenizer
from .v0 import text_tokenizer_from_v0

HF_TOKENIZER = "tokenizer.json"
HF_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
CHAT_TEMPLATE = "chat_template.jinja"
CHAT_TEMPLATE_JSON = "chat_template.json"
"""Where transformers' save_pretrained puts the chat template today (and did before), not tokenizer_config.json."""


def tokenizer_from_hf(folder: Path) -> TextTokenizer:
    """The tokenizer of a Hugging Face model folder; one PxglError naming the file for anything pxgl cannot
    read exactly. (A model with more embedding rows than tokens takes its `padded_to`.)"""
    folder = Path(folder)
    where = str(folder / HF_TOKENIZER)
    doc = _read_json(folder, HF_TOKENIZER)
    if doc is None:
        raise PxglError(f"{where}: no such file; pxgl reads a model's tokenizer from its tokenizer.json")
    config, generation = _settings(folder, HF_CONFIG), _settings(folder, GENERATION_CONFIG)
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise PxglError(f"{where}: not a tokenizers file (no 'model' object)")
    model = doc["model"]
    if model.get("type", "BPE") != "BPE":
        raise PxglError(f"{where}: a {model.get('type')!r} model; pxgl reads BPE tokenizers only")
    for key, empty in (
        ("dropout", (None, 0, 0.0)),
        ("continuing_subword_prefix", (None, "")),
        ("end_of_word_suffix", (None, "")),
    ):
        if model.get(key) not in empty:
            raise PxglError(f"{where}: the BPE model's {key} {model.get(key)!r} is not supported")
    vocab = _vocab(model.get("vocab"), where)
    ids = {piece: i for i, piece in enumerate(vocab)}
    merges = _merges(model.get("merges"), ids, len(vocab), where)
    added = _added_tokens(doc.get("added_tokens") or [], ids, where)
    pre_tokenizer = pre_tokenizer_from_hf(doc.get("pre_tokenizer"), where)
    contents = {t.content: t.id for t in added}
    unk = model.get("unk_token")
    if unk is not None and not (isinstance(unk, str) and unk in ids):
        raise PxglError(f"{where}: the unk_token {unk!r:.40} is not in the vocabulary")
    bos_id, add_bos = _post_processor_bos(doc.get("post_processor"), where)
    bos_token, eos_token = _token_name(config.get("bos_token")), _token_name(config.get("eos_token"))
    if bos_token is not None:
        bos_id = _token_id(bos_token, contents, ids, f"{folder / HF_CONFIG}: bos_token")
    if isinstance(config.get("add_bos_token"), bool):
        add_bos = config["add_bos_token"] and bos_id is not None
    eos_ids = [] if eos_token is None else [_token_id(eos_token, contents, ids, f"{folder / HF_CONFIG}: eos_token")]
    more = generation.get("eos_token_id")
    for extra in more if isinstance(more, list) else [] if more is None else [more]:
        if extra not in eos_ids:
            eos_ids.append(extra)
    return TextTokenizer(
        "byte-level" if any(step["type"] == "byte_level" for step in pre_tokenizer) else "sentencepiece",
        vocab,
        merges,
        unk_id=None if unk is None else ids[unk],
        byte_fallback=model.get("byte_fallback", False),
        fuse_unk=model.get("fuse_unk", False),
        ignore_merges=model.get("ignore_merges", False),
        normalizer=normalizer_from_hf(doc.get("normalizer"), where),
        pre_tokenizer=pre_tokenizer,
        decoder=decoder_from_hf(doc.get("decoder"), where),
        added_tokens=added,
        bos_id=bos_id,
        eos_ids=eos_ids,
        add_bos=add_bos,
        chat_template=_folder_chat_template(folder, config),
        where=where,
    )


def write_hf_tokenizer(tokenizer: "TextTokenizer | Tokenizer", folder: Path) -> None:
    """tokenizer.json and tokenizer_config.json in folder, which tokenizers and transformers load and which
    encode and decode as `tokenizer` does (a version-0 one converted first, §6.1)."""
    text = text_tokenizer_from_v0(tokenizer) if isinstance(tokenizer, Tokenizer) else tokenizer
    vocab = text.vocab
    bos = text.id_string(text.bos_id) if text.bos_id is not None else None
    post_processor = None
    if text.add_bos and bos is not None:
        post_processor = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [text.bos_id], "tokens": [bos]}},
        }
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": t.id, "content": t.content, **{f: getattr(t, f) for f in ADDED_FLAGS}} for t in text.added_tokens
        ],
        "normalizer": normalizer_to_hf(text.normalizer),
        "pre_tokenizer": pre_tokenizer_to_hf(text.pre_tokenizer),
        "post_processor": post_processor,
        "decoder": decoder_to_hf(text.decoder),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None if text.unk_id is None else vocab[text.unk_id],
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": text.fuse_unk,
            "byte_fallback": text.byte_fallback,
            "ignore_merges": text.ignore_merges,
            "vocab": {piece: i for i, piece in enumerate(vocab)},
            "merges": [[vocab[a], vocab[b]] for a, b in text.merges],
        },
    }
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": text.add_bos,
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": text.id_string(text.eos_ids[0]) if text.eos_ids else None,
        "unk_token": None if text.unk_id is None else vocab[text.unk_id],
    }
    if text.chat_template is not None:
        config["chat_template"] = text.chat_template
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in ((HF_TOKENIZER, doc), (HF_CONFIG, config)):
        data = json.dumps(content, ensure_ascii=False, separators=(",", ":")) + "\n"
        atomic_write(folder / name, lambda tmp, data=data: tmp.write_text(data, encoding="utf-8"))


def _read_json(folder: Path, name: str) -> Any:
    """A JSON file of the folder, None when absent; a link leading out of the folder is refused."""
    text = _read_text(folder, name, "tokenizer file")
    return None if text is None else parse_tokenizer_json(text, str(folder / name))


def _settings(folder: Path, name: str) -> dict[str, Any]:
    """tokenizer_config.json or generation_config.json: an object ({} when the folder has none)."""
    text = _read_text(folder, name, "tokenizer file")
    settings = {} if text is None else parse_tokenizer_json(text, str(folder / name))
    if not isinstance(settings, dict):
        raise PxglError(f"{folder / name}: not a JSON object; {name} is an object of settings")
    return settings


def _read_text(folder: Path, name: str, what: str) -> str | None:
    path = folder / name
    if not path.exists() and not path.is_symlink():
        return None
    return read_text(in_folder(folder, path), what)


def _folder_chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    """chat_template.jinja, else chat_template.json's "chat_template", else tokenizer_config.json's (the order
    transformers reads them in)."""
    template = _read_text(folder, CHAT_TEMPLATE, "chat template file")
    if template is not None:
        return template
    saved = _read_json(folder, CHAT_TEMPLATE_JSON)
    if isinstance(saved, dict) and "chat_template" in saved:
        return _chat_template(saved["chat_template"], str(folder / CHAT_TEMPLATE_JSON))
    return _chat_template(config.get("chat_template"), str(folder / HF_CONFIG))


def _vocab(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, dict):
        raise PxglError(f"{where}: the BPE model's vocab must be an object of piece: id")
    if len(raw) > MAX_IDS:
        raise PxglError(f"{where}: {len(raw)} pieces in the vocabulary; at most {MAX_IDS}")
    vocab: list[str | None] = [None] * len(raw)
    for piece, i in raw.items():
        if not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(raw)) or vocab[i] is not None:
            raise PxglError(
                f"{where}: the vocabulary's ids must be 0..{len(raw) - 1}, each once; {piece!r:.40} has {i!r:.20}"
            )
        vocab[i] = piece
    return vocab  # type: ignore[return-value]


def _merges(raw: Any, ids: dict[str, int], pieces: int, where: str) -> list[tuple[int, int]]:
    if not isinstance(raw, list):
        raise PxglError(f"{where}: the BPE model's merges must be a list")
    raw = [m for m in raw if not (isinstance(m, str) and m.startswith("#version"))]
    if len(raw) > MAX_MERGES_A_PIECE * pieces:
        raise PxglError(
            f"{where}: {len(raw)} merges for a vocabulary of {pieces}; at most {MAX_MERGES_A_PIECE} a piece"
        )
    merges = []
    for rank, merge in enumerate(raw):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        try:
            left, right = parts if isinstance(parts, list) else ()
            merges.append((ids[left], ids[right]))  # a key that is no string is in no vocabulary
        except (ValueError, TypeError, KeyError):
            raise PxglError(f"{where}: merge {rank} {merge!r:.60} is not two pieces of the vocabulary") from None
    return merges


def _added_tokens(raw: Any, ids: dict[str, int], where: str) -> list[AddedToken]:
    """The added tokens, each with the id tokenizers gives it when it reads the file (its model's id for a
    piece of the vocabulary, else the next past the vocabulary, in order; the id written beside it is only
    checked, with a warning): a file where the two differ is refused, not read either way."""
    if not isinstance(raw, list) or len(raw) > MAX_ADDED:
        raise PxglError(f"{where}: added_tokens must be a list of at most {MAX_ADDED}")
    added = []
    next_id = len(ids)
    for i, token in enumerate(raw):
        if not (isinstance(token, dict) and isinstance(token.get("content"), str) and isinstance(token.get("id"), int)):
            raise PxglError(f"{where}: added token {i} needs an integer id and a string content")
        flags = {flag: token.get(flag, flag == "normalized" and not token.get("special")) for flag in ADDED_FLAGS}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise PxglError(f"{where}: added token {i}'s {', '.join(ADDED_FLAGS)} must be true or false")
        given = ids.get(token["content"], next_id)
        if given != token["id"]:
            raise PxglError(
                f"{where}: added token {i} {token['content']!r:.40} is written with id {token['id']}, but tokenizers "
                f"gives it {given}; fix the file's ids"
            )
        next_id += given == next_id
        added.append(AddedToken(token["id"], token["content"], **flags))
    return added


def _post_processor_bos(raw: Any, where: str) -> tuple[int | None, bool]:
    """(bos id, add_bos) from a TemplateProcessing post-processor (alone or in a Sequence)."""
    if not isinstance(raw, dict):
        return None, False
    if raw.get("type") == "Sequence":
        found = [_post_processor_bos(p, where) for p in raw.get("processors") or []]
        return next((f for f in found if f[1]), (None, False))
    if raw.get("type") != "TemplateProcessing":
        return None, False
    single = raw.get("single")
    if not isinstance(single, list):
        raise PxglError(f"{where}: the TemplateProcessing post-processor has no 'single' template")
    names = [next(iter(item), None) if isinstance(item, dict) else None for item in single]
    if "Sequence" not in names or names[names.index("Sequence") + 1 :]:
        raise PxglError(f"{where}: the post-processor adds tokens after the text; pxgl adds only a BOS before it")
    if names[0] != "SpecialToken":
        return None, False
    if len(names) != 2:
        raise PxglError(f"{where}: the post-processor adds {len(names) - 1} tokens before the text; pxgl adds one BOS")
    name = _object(single[0]["SpecialToken"]).get("id")
    special = _object(_object(raw.get("special_tokens")).get(name)) if isinstance(name, str) else {}
    ids = special.get("ids")
    if not (isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], int)):
        raise PxglError(f"{where}: the post-processor's special token {name!r:.40} must have one id")
    return ids[0], True


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _token_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _token_id(name: str, added: dict[str, int], ids: dict[str, int], where: str) -> int:
    if name in added:
        return added[name]
    if name in ids:
        return ids[name]
    raise PxglError(f"{where} {name!r:.40} is neither an added token nor a piece of the vocabulary")


def _chat_template(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = [t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"]
        if named and isinstance(named[0], str):
            return named[0]
    raise PxglError(f"{where}: chat_template must be a string or a list of named templates with a 'default'")
