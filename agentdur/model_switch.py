"""A fork's model switch: what it records, and the model rebuilt from that. No I/O.

`resolve_model_choice` turns a fork's `model=` (a `Model`, a name, "provider:name")
into what the fork records in `metadata["fork"]["models"]`; `build_model` rebuilds a
model from such a record in the fork's replay and recovery, as close to the agent's
own model as it can be (docs/design-decisions.md, "Replay and fork").
"""

from __future__ import annotations

from typing import Any

from agentdur.errors import UsageError
from agentdur.models.base import Model

PROVIDERS = {
    "openai": "openai_chat",
    "openai_chat": "openai_chat",
    "openai-responses": "openai_responses",
    "openai_responses": "openai_responses",
    "anthropic": "anthropic_messages",
    "anthropic_messages": "anthropic_messages",
}


def resolve_model_choice(model: Any) -> tuple[dict[str, Any] | None, Model | None]:
    """(what a fork records, the instance to use now) for a fork's `model=`.

    A `Model` instance is recorded with what `build_model` needs to rebuild an
    equivalent one in replay and recovery: provider, name, the answer parameters
    (`describe()`) and its endpoint (scheme, host, path; never a key or a header).
    """
    if model is None:
        return None, None
    if isinstance(model, Model):
        described = model.describe()
        meta: dict[str, Any] = {
            "provider": model.provider,
            "model": model.model_name,
            "params": described["params"],
        }
        endpoint = model.endpoint()
        if endpoint is not None:
            meta["endpoint"] = endpoint
        return meta, model
    if isinstance(model, str) and model:
        provider, sep, name = model.partition(":")
        if not sep:
            return {"provider": None, "model": model}, None
        if provider not in PROVIDERS or not name:
            raise UsageError(
                f"model {model!r}: use a model name, or provider:name with provider one of "
                "openai, openai-responses, anthropic"
            )
        return {"provider": PROVIDERS[provider], "model": name}, None
    raise UsageError(f"model= must be a Model or a string, not {type(model).__name__}")


_OPENAI_FAMILY = frozenset({"openai_chat", "openai_responses"})
"""Adapters on the same SDK client (`openai.AsyncOpenAI`): one can use the other's."""


def build_model(
    provider: str | None,
    name: str,
    base: Model,
    *,
    params: dict[str, Any] | None = None,
    endpoint: str | None = None,
) -> Model:
    """A model for a recorded switch, as close to the agent's own as it can be.

    - Same provider and endpoint as the agent's model (or none recorded): the agent's
      adapter with another name and the recorded parameters, sharing its client.
    - The other OpenAI API at the same endpoint: a new adapter on the agent's client
      (or its client options: base URL, key, headers).
    - Anything else: a new adapter at the recorded endpoint, its key from the SDK's
      environment variable (the agent's key is never sent to another server).
    """
    from agentdur.models import AnthropicMessages, OpenAIChat, OpenAIResponses
    from agentdur.models.base import SDKModel

    same_place = endpoint is None or endpoint == base.endpoint()
    if (provider is None or provider == base.provider) and same_place:
        return base.with_model(name) if params is None else base.with_settings(name, params)
    adapters: dict[str, type[SDKModel]] = {
        "openai_chat": OpenAIChat,
        "openai_responses": OpenAIResponses,
        "anthropic_messages": AnthropicMessages,
    }
    provider = provider or base.provider
    if provider not in adapters:
        raise UsageError(f"cannot build a {provider!r} model for {name!r}")
    options: dict[str, Any] = dict(params or {})
    shares_client = (
        isinstance(base, SDKModel) and {provider, base.provider} <= _OPENAI_FAMILY and same_place
    )
    if shares_client:
        assert isinstance(base, SDKModel)
        if base._client is not None:
            options["client"] = base._client
        else:
            options.update(base._client_options)
    elif endpoint is not None:
        options["base_url"] = endpoint
    return adapters[provider](name, **options)
