"""Chat (docs/FORMATS.md §16): a model's chat template rendered as transformers renders it, in a bounded
sandbox, and a conversation's prompt ids; `pxgl chat`'s session. /v1/chat/completions lives with serve
(engine/serve/chat.py), which uses these.

    template.py  the template: Jinja2's immutable sandbox, transformers' globals, §16.1's bounds
    prompt.py    the conversation's ids (BOS once), a --template file
    session.py   `pxgl chat`: one KV-cache slot holding the conversation between turns"""
