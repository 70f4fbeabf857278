//! `[auth]`: the section (secrets from the environment or a file, never the table), its defaults and validation.

use super::*;

/// `[auth]`: who may call. Secrets never live in this table: they come from the environment or a file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Require a valid `Authorization: Bearer <JWT>` on every client request. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Accept HS256 tokens signed with the shared secret. Default `true`; `false` for a JWKS-only setup.
    #[serde(default = "default_true")]
    pub hs256: bool,
    /// The environment variable holding the HS256 secret (at least 32 bytes, used as is).
    /// Default `R1_JWT_SECRET` when `secret_file` is not set either. Set at most one of the two.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A file holding the HS256 secret (trailing newlines are dropped). Set at most one of this and `secret_env`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Rotation: the environment variable holding the previous secret, accepted beside the current one
    /// during the rotation window. Set at most one of this and `previous_secret_file`.
    #[serde(default)]
    pub previous_secret_env: Option<String>,
    /// Rotation: a file holding the previous secret.
    #[serde(default)]
    pub previous_secret_file: Option<PathBuf>,
    /// A JWKS JSON file (`{"keys":[…]}`) of RS256/ES256 public keys; re-read when it changes
    /// ([`Verifier::reload_if_changed`]). Keys for other uses or algorithms are skipped.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in whole seconds. Default `30s`, at most `5m`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// When set, tokens must carry this `aud` (alone or in a list).
    #[serde(default)]
    pub audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Claims the subject is taken from, first present wins. Default `["user_id", "sub"]` (the DeepSeek-R1
    /// guide's clients put it in `user_id`). A string, or an integer written in decimal.
    #[serde(default = "default_subject_claims")]
    pub subject_claims: Vec<String>,
    /// Longest token accepted, in bytes; longer ones are refused before any parsing. Default 8192,
    /// within 1024..=65536.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            enabled: true,
            hs256: true,
            secret_env: None,
            secret_file: None,
            previous_secret_env: None,
            previous_secret_file: None,
            jwks_file: None,
            leeway: default_leeway(),
            audience: None,
            issuer: None,
            subject_claims: default_subject_claims(),
            max_token_bytes: default_max_token_bytes(),
        }
    }
}

pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_subject_claims() -> Vec<String> {
    vec!["user_id".to_owned(), "sub".to_owned()]
}
pub(super) fn default_max_token_bytes() -> usize {
    8 * 1024
}

/// Where a secret is read from, with the config key that named it (for error messages).
#[derive(Debug, Clone, Copy)]
pub(super) enum SecretSource<'a> {
    Env(&'static str, &'a str),
    File(&'static str, &'a Path),
}

impl AuthSection {
    /// A verifier when `enabled`, `None` when auth is off. Reads the secrets and the JWKS file now.
    pub fn verifier(&self) -> Result<Option<Verifier>, AuthSetupError> {
        if self.enabled {
            Verifier::from_section(self).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(super) fn current_secret(&self) -> Option<SecretSource<'_>> {
        if !self.hs256 {
            return None;
        }
        Some(match (&self.secret_env, &self.secret_file) {
            (_, Some(file)) => SecretSource::File("auth.secret_file", file),
            (Some(var), None) => SecretSource::Env("auth.secret_env", var),
            (None, None) => SecretSource::Env("auth.secret_env", DEFAULT_SECRET_ENV),
        })
    }

    pub(super) fn previous_secret(&self) -> Option<SecretSource<'_>> {
        if !self.hs256 {
            return None;
        }
        match (&self.previous_secret_env, &self.previous_secret_file) {
            (_, Some(file)) => Some(SecretSource::File("auth.previous_secret_file", file)),
            (Some(var), None) => Some(SecretSource::Env("auth.previous_secret_env", var)),
            (None, None) => None,
        }
    }
}

impl Validate for AuthSection {
    /// Every problem of the table, each prefixed with its key (`auth.leeway: …`). No I/O: the secrets and
    /// the JWKS file are read by [`Verifier::from_section`], whose errors name their key too.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (env_key, env, file_key, file) in [
            (
                "auth.secret_env",
                &self.secret_env,
                "auth.secret_file",
                &self.secret_file,
            ),
            (
                "auth.previous_secret_env",
                &self.previous_secret_env,
                "auth.previous_secret_file",
                &self.previous_secret_file,
            ),
        ] {
            let set =
                r1_config::secret::pair_problems(&mut problems, (env_key, env.as_deref()), (file_key, file.as_deref()));
            if !self.hs256 && set {
                let key = if env.is_some() { env_key } else { file_key };
                problems.push(format!("{key}: set, but auth.hs256 is false"));
            }
        }
        let same_source = match (self.current_secret(), self.previous_secret()) {
            (Some(SecretSource::Env(_, a)), Some(SecretSource::Env(_, b))) => a == b,
            (Some(SecretSource::File(_, a)), Some(SecretSource::File(_, b))) => a == b,
            _ => false,
        };
        if same_source {
            problems.push("auth.previous_secret_env: must name another source than the current secret".to_owned());
        }
        if self.jwks_file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            problems.push("auth.jwks_file: must not be empty".to_owned());
        }
        if self.enabled && !self.hs256 && self.jwks_file.is_none() {
            problems.push("auth.hs256: false and no auth.jwks_file: no token could ever be accepted".to_owned());
        }
        if self.leeway > MAX_LEEWAY {
            problems.push(format!(
                "auth.leeway: {} exceeds the maximum of {}",
                humantime::format_duration(self.leeway),
                humantime::format_duration(MAX_LEEWAY)
            ));
        }
        if !TOKEN_BYTES_RANGE.contains(&self.max_token_bytes) {
            problems.push(format!(
                "auth.max_token_bytes: {} must be within {}..={}",
                self.max_token_bytes,
                TOKEN_BYTES_RANGE.start(),
                TOKEN_BYTES_RANGE.end()
            ));
        }
        if self.subject_claims.is_empty() {
            problems.push("auth.subject_claims: must name at least one claim".to_owned());
        }
        for (i, claim) in self.subject_claims.iter().enumerate() {
            if claim.trim().is_empty() {
                problems.push(format!("auth.subject_claims[{i}]: must not be empty"));
            } else if self.subject_claims[..i].contains(claim) {
                problems.push(format!("auth.subject_claims[{i}]: `{claim}` is listed twice"));
            }
        }
        for (key, value) in [("auth.audience", &self.audience), ("auth.issuer", &self.issuer)] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                problems.push(format!("{key}: must not be empty when set"));
            }
        }
        problems
    }
}
