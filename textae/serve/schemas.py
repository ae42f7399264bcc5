"""Request and response bodies (pydantic), which are also the served OpenAPI spec.

Request models are built per server by `request_models(limits)`: the limits an operator sets on the
command line (inputs per request, characters per input, the vector width of the model) then appear
in the spec as maxItems / maxLength, so clients and spec-driven tests see the real contract.
"""

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- errors ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong, and where; never a copy of the input.")
    type: str = Field(description="invalid_request_error, authentication_error, payload_too_large, overloaded, unavailable or server_error.")
    param: str | None = Field(None, description="The request field at fault, e.g. `input[3]`, when there is one.")
    code: int = Field(description="The HTTP status code.")


class ErrorResponse(BaseModel):
    """Every error has this shape (the OpenAI API's), so the openai client reports its message."""

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    401: "Missing or wrong bearer token (only when the server was started with --api-key-file).",
    413: "The request body is larger than --max-body-bytes.",
    422: "Malformed JSON, a wrong type, too many inputs, an input over --max-chars, a lone surrogate, a non-finite or "
    "wrong-width vector, or an over-long input with `truncate: false`. `error.param` names the field.",
    429: "The queue is full; retry after the number of seconds in the Retry-After header.",
    500: "onnxruntime failed on this batch; the server keeps serving.",
    503: "The server is starting or shutting down.",
}


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The `responses=` entry of a route that can answer with these error codes."""
    return {code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# --- request models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_inputs: int
    max_chars: int
    dim: int  # width of a raw sentence vector: what /decode reads
    max_decode_length: int


@dataclass(frozen=True)
class RequestModels:
    openai_embeddings: type[BaseModel]
    embed: type[BaseModel]
    reconstruct: type[BaseModel]
    score: type[BaseModel]
    decode: type[BaseModel]


# A beam multiplies a batch's decoding work by its width while the batcher counts inputs, so the
# server bounds it well below the runtime's own limit (textae.runtime.beam.MAX_BEAM_SIZE).
MAX_SERVED_BEAM = 8

_TRUNCATE = Field(
    True,
    description="Inputs longer than the model's max_length tokens are cut and reported in `truncated`; "
    "false refuses them with 422 instead.",
)


def request_models(limits: Limits) -> RequestModels:
    # pydantic refuses lone surrogates (JSON "\\ud800" escapes) in str fields itself: 422, type string_unicode
    Text = Annotated[str, Field(max_length=limits.max_chars)]
    Texts = Annotated[list[Text], Field(min_length=1, max_length=limits.max_inputs)]
    Inputs = Annotated[
        Text | Texts,
        Field(description=f"One sentence, or a list of 1 to {limits.max_inputs}; each at most {limits.max_chars} characters."),
    ]
    DecodeLength = Annotated[
        int | None,
        Field(None, ge=1, le=limits.max_decode_length, description="Most tokens to generate per text (default: the model's max_length + 1)."),
    ]
    BeamSize = Annotated[
        int,
        Field(1, ge=1, le=MAX_SERVED_BEAM, description=f"Hypotheses kept per text, 1 to {MAX_SERVED_BEAM} (1: greedy); "
              "a beam of k reproduces more sentences exactly at about k times the decoding cost."),
    ]  # fmt: skip
    Finite = Annotated[float, Field(allow_inf_nan=False)]
    Vector = Annotated[list[Finite], Field(min_length=limits.dim, max_length=limits.dim)]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class OpenAIEmbeddingsRequest(BaseModel):
        """The OpenAI embeddings request; unknown fields (e.g. `user`) are accepted and ignored."""

        model_config = ConfigDict(extra="ignore")
        input: Inputs
        model: str | None = Field(None, max_length=256, description="Accepted for compatibility; the served model answers.")
        encoding_format: Literal["float", "base64"] = Field(
            "float", description="base64: each vector as little-endian float32 bytes, base64-encoded (what the openai client asks for)."
        )
        dimensions: int | None = Field(None, ge=1, description=f"If given, must be the model's width ({limits.dim}).")
        user: str | None = Field(None, max_length=256, description="Ignored.")

    class EmbedRequest(Strict):
        inputs: Inputs
        normalize: bool = Field(False, description="Scale every vector to unit length.")
        raw: bool = Field(False, description="The encoder's raw vectors, without the whitening the export stores and applies by default (/decode takes them with raw).")
        output: Literal["sentence_embedding", "features"] = Field("sentence_embedding", description="sentence_embedding: the sentence vector (what /decode reads); features: the encoder's features (feature_dim wide in /info; by default the sentence vector beside the token embeddings' mean, max and min, the better vectors for similarity and classifiers).")
        truncate: bool = _TRUNCATE

    class ReconstructRequest(Strict):
        inputs: Inputs
        max_length: DecodeLength
        beam_size: BeamSize = 1
        truncate: bool = _TRUNCATE

    class ScoreRequest(Strict):
        inputs: Inputs
        threshold: Finite | None = Field(None, description="If given, `flagged[i]` is score >= threshold.")
        truncate: bool = _TRUNCATE

    class DecodeRequest(Strict):
        vectors: Annotated[list[Vector], Field(min_length=1, max_length=limits.max_inputs, description=f"1 to {limits.max_inputs} vectors of {limits.dim} finite numbers.")]
        max_length: DecodeLength
        beam_size: BeamSize = 1
        raw: bool = Field(False, description="The vectors are raw (/embed with raw); by default they are as /embed returns them, and the export's whitening is undone.")

    return RequestModels(OpenAIEmbeddingsRequest, EmbedRequest, ReconstructRequest, ScoreRequest, DecodeRequest)


# --- response models ---------------------------------------------------------------------------


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="Position of the input in the request.")
    embedding: list[float] | str = Field(description="The vector: numbers, or base64 of little-endian float32.")


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the model read, after truncation.")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str = Field(description="The served model's name.")
    usage: OpenAIUsage


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="One vector per input, in order.")
    truncated: list[bool] = Field(description="Per input: it had more than max_length tokens and was cut.")


class ReconstructResponse(BaseModel):
    texts: list[str] = Field(description="What the model decodes from each input's vector.")
    truncated: list[bool]


class ScoreResponse(BaseModel):
    scores: list[float] = Field(description="Mean per-token negative log-likelihood: higher is more unusual.")
    truncated: list[bool]
    flagged: list[bool] | None = Field(None, description="score >= threshold, when a threshold was given.")


class DecodeResponse(BaseModel):
    texts: list[str] = Field(description="Greedy text for each vector.")


class StatusResponse(BaseModel):
    status: str = Field(description="alive or ready.")


class InfoLimits(BaseModel):
    max_inputs: int
    max_chars: int
    max_body_bytes: int
    max_queue: int
    max_decode_length: int
    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float


class InfoResponse(BaseModel):
    model: str = Field(description="Name of the served model (its folder's name).")
    precision: str = Field(description="fp32 or int8.")
    dim: int = Field(description="Width of a sentence vector from /embed (whitened by default, when the export stores a whitening).")
    raw_dim: int = Field(description="Width of a raw sentence vector (/embed with raw, and what /decode reads).")
    feature_dim: int | None = Field(description="Width of /embed's features output (whitened by default); null when the export has none (format version 1).")
    feature_source: str | None = Field(description="What the features hold: vector+tokens, tokens, states or states+tokens; null without features.")
    max_length: int = Field(description="Tokens the model reads per input; longer inputs are truncated or refused.")
    textae_version: str
    threads: int = Field(description="onnxruntime intra-op threads of this worker.")
    workers: int
    limits: InfoLimits
