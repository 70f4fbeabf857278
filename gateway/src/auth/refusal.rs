//! Why a verifier could not be built, and why a request was refused (every refusal a 401 with one generic body).

use super::*;

/// Why a [`Verifier`] could not be built (startup or config reload) or a JWKS reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The `[auth]` table has problems (the same lines [`Validate::problems`] gives).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The secret's environment variable is unset or empty.
    #[error("{key}: environment variable {var} is not set or empty")]
    SecretEnvUnset {
        /// The config key that named the variable.
        key: &'static str,
        /// The variable.
        var: String,
    },
    /// The secret file could not be read.
    #[error("{key}: {}: {source}", path.display())]
    SecretFile {
        /// The config key that named the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret is too short to resist guessing.
    #[error("{key}: the secret is {len} bytes; HS256 needs at least {MIN_SECRET_BYTES}")]
    SecretTooShort {
        /// The config key that named the source.
        key: &'static str,
        /// Its length.
        len: usize,
    },
    /// The JWKS file could not be read or holds no usable key (on reload, the old keys stay).
    #[error("auth.jwks_file: {}: {message}", path.display())]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Why a request was refused. Every variant answers 401 with the same generic body (see
/// [`client_message`](Self::client_message)); [`reason`](Self::reason) says which check failed, for logs and
/// a counter only. A plain `Copy` enum: refusals are on the hot path of an attack, so nothing is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    MultipleHeaders,
    /// A scheme other than `Bearer` (e.g. `Basic`).
    #[error("Authorization scheme is not Bearer")]
    WrongScheme,
    /// A token-like value in the query string (tokens in URLs leak into logs).
    #[error("token in the query string")]
    QueryToken,
    /// The header or token is longer than `max_token_bytes`.
    #[error("token longer than max_token_bytes")]
    TooLarge,
    /// Not a JWT: wrong shape, bad base64 or JSON, a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// An `alg` no configured key accepts (`none`, HS512, RS256 without a JWKS file, …).
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    /// The token names a `kid` the JWKS file does not hold.
    #[error("unknown key id")]
    UnknownKey,
    /// No configured key verifies the signature.
    #[error("bad signature")]
    BadSignature,
    /// No `exp` claim.
    #[error("no exp claim")]
    MissingExp,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` missing or not the configured audience.
    #[error("wrong or missing audience")]
    BadAudience,
    /// `iss` missing or not the configured issuer.
    #[error("wrong or missing issuer")]
    BadIssuer,
    /// No usable subject: absent, empty, not a string or integer, too long, or with control characters.
    #[error("no usable subject claim")]
    NoSubject,
}

impl AuthError {
    /// Every variant, for pre-registering the counter's label values.
    pub const ALL: [AuthError; 15] = [
        Self::Missing,
        Self::MultipleHeaders,
        Self::WrongScheme,
        Self::QueryToken,
        Self::TooLarge,
        Self::Malformed,
        Self::AlgNotAllowed,
        Self::UnknownKey,
        Self::BadSignature,
        Self::MissingExp,
        Self::Expired,
        Self::NotYetValid,
        Self::BadAudience,
        Self::BadIssuer,
        Self::NoSubject,
    ];

    /// A short label for a metric (a bounded set: see [`ALL`](Self::ALL)).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::MultipleHeaders => "multiple_headers",
            Self::WrongScheme => "wrong_scheme",
            Self::QueryToken => "query_token",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::MissingExp => "missing_exp",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadAudience => "bad_audience",
            Self::BadIssuer => "bad_issuer",
            Self::NoSubject => "no_subject",
        }
    }

    /// The sentence for the client. Never the token, never which check failed: a missing token and a token
    /// in the URL are told how to send one; everything else is "invalid or expired token".
    pub const fn client_message(self) -> &'static str {
        match self {
            Self::Missing => "missing bearer token: send `Authorization: Bearer <JWT>`",
            Self::QueryToken => "tokens are not accepted in the URL: send `Authorization: Bearer <JWT>`",
            _ => "invalid or expired token",
        }
    }

    /// The `WWW-Authenticate` header value for the 401 (RFC 6750 §3).
    pub const fn www_authenticate(self) -> &'static str {
        match self {
            Self::Missing => "Bearer realm=\"r1-gateway\"",
            _ => "Bearer realm=\"r1-gateway\", error=\"invalid_token\"",
        }
    }

    /// The 401 the client gets: OpenAI `authentication_error`, code `invalid_api_key`, the generic message.
    pub fn to_gateway_error(self) -> GatewayError {
        GatewayError::downstream(r1_proto::ErrorKind::Authentication, self.client_message())
            .code("invalid_api_key")
            .challenge(self.www_authenticate())
    }
}
