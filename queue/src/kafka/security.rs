//! How a Kafka client proves who it is and checks who it talks to: the `security` table that the
//! gateway's `[center.kafka]` and r1-center's `[kafka]` share, its validation, and the librdkafka
//! properties it becomes.
//!
//! ```toml
//! [kafka.security]
//! protocol = "sasl_ssl"                  # plaintext | ssl | sasl_plaintext | sasl_ssl
//! ca_file = "/etc/r1/kafka-ca.pem"       # default: the system's trust store
//! # cert_file = "/etc/r1/client.pem"     # mutual TLS, with key_file
//! # key_file = "/etc/r1/client.key"
//! [kafka.security.sasl]
//! mechanism = "SCRAM-SHA-512"            # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER
//! username = "r1-center"
//! password_env = "R1_KAFKA_PASSWORD"     # or password_file = "/run/secrets/kafka-password"
//! ```
//!
//! Secrets (the SASL password, the OIDC client secret, the key's passphrase) never live in the file:
//! each comes from an environment variable (`*_env`) or a file (`*_file`), and a literal value is
//! refused with an error naming its key. Validation is pure ([`SecuritySection::problems`]);
//! [`SecuritySection::file_problems`] reads the files (`--check-config`); [`SecuritySection::resolve`]
//! reads the secrets at start-up. GSSAPI (Kerberos) is not offered: it would need libsasl2.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;

/// A secret or PEM file larger than this is not what the key names.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// `security`: TLS and SASL towards the brokers. Absent: plaintext, no authentication.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// librdkafka's `security.protocol`: `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`
    /// (what managed Kafka services ask for).
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// PEM file of the CA certificate(s) the brokers' certificates are checked against (TLS protocols).
    /// Absent: the system's trust store (the images carry Debian's `ca-certificates`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This client's certificate chain (PEM), for brokers that ask for one (mutual TLS); with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The environment variable holding `key_file`'s passphrase, when the key is encrypted.
    #[serde(default)]
    pub key_password_env: Option<String>,
    /// A file holding `key_file`'s passphrase (trailing newlines dropped).
    #[serde(default)]
    pub key_password_file: Option<PathBuf>,
    /// Refused: a passphrase never goes in the file (use `key_password_env` or `key_password_file`).
    #[serde(default)]
    pub key_password: Option<Refused>,
    /// Check that the broker's certificate names the host the client connected to. Default `true`;
    /// turn it off only for brokers whose advertised names are not in their certificates.
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
    /// SASL authentication (`sasl_plaintext`, `sasl_ssl`).
    #[serde(default)]
    pub sasl: Option<SaslSection>,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            protocol: SecurityProtocol::default(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_password_env: None,
            key_password_file: None,
            key_password: None,
            verify_hostname: true,
            sasl: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (the test broker's and the embedded stack's default).
    #[default]
    Plaintext,
    /// TLS; the broker may ask for a client certificate.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `security.sasl`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSection {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (OIDC client credentials, `oidc`).
    pub mechanism: SaslMechanism,
    /// The user (PLAIN, SCRAM).
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the password (PLAIN, SCRAM). Set this or `password_file`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (trailing newlines dropped), e.g. a mounted Kubernetes Secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Refused: a password never goes in the file (use `password_env` or `password_file`).
    #[serde(default)]
    pub password: Option<Refused>,
    /// OAUTHBEARER: tokens from an OpenID Connect provider (client-credentials grant, refreshed by
    /// librdkafka before they expire).
    #[serde(default)]
    pub oidc: Option<OidcSection>,
}

/// librdkafka's `sasl.mechanism` (the ones that need no more than OpenSSL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// User and password as they are (only over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response, SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response, SHA-512 (MSK, Aiven).
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// Bearer tokens (OIDC client credentials): Confluent Cloud, Event Hubs, MSK with IAM-less OAuth.
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OauthBearer => "OAUTHBEARER",
        }
    }
}

/// `security.sasl.oidc`: librdkafka's `sasl.oauthbearer.method = oidc`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's token endpoint (`https://…/oauth2/token`).
    pub token_endpoint_url: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The environment variable holding the client secret. Set this or `client_secret_file`.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// A file holding the client secret (trailing newlines dropped).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Refused: a secret never goes in the file.
    #[serde(default)]
    pub client_secret: Option<Refused>,
    /// The scope asked for, when the provider wants one.
    #[serde(default)]
    pub scope: Option<String>,
    /// SASL extensions sent with the token (Confluent Cloud: `logicalCluster`, `identityPoolId`).
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

/// A key refused whatever its value (a secret written into the file): its value is read past, never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Self)
    }
}

/// A secret's source: an environment variable or a file, with the config key that named it.
#[derive(Debug, Clone)]
pub(crate) enum Secret<'a> {
    Env(String, &'a str),
    File(String, &'a Path),
}

impl SecuritySection {
    /// Every problem of the table, each prefixed with `key` (`kafka.security`), in file order. No I/O.
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let protocol = self.protocol;
        let literal = "never goes in the configuration file";
        if self.key_password.is_some() {
            problems.push(format!(
                "{key}.key_password: a passphrase {literal}; name its environment variable (key_password_env) or file (key_password_file)"
            ));
        }
        // Refused wherever they are, whatever else is wrong.
        if let Some(sasl) = &self.sasl {
            if sasl.password.is_some() {
                problems.push(format!(
                    "{key}.sasl.password: a password {literal}; name its environment variable (password_env) or file (password_file)"
                ));
            }
            if sasl.oidc.as_ref().is_some_and(|o| o.client_secret.is_some()) {
                problems.push(format!(
                    "{key}.sasl.oidc.client_secret: a secret {literal}; name its environment variable (client_secret_env) or file (client_secret_file)"
                ));
            }
        }
        if !protocol.tls() {
            for (name, set) in [
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
                ("verify_hostname", !self.verify_hostname),
            ] {
                if set {
                    problems.push(format!(
                        "{key}.{name}: set, but {key}.protocol = \"{}\" does not use TLS (ssl or sasl_ssl)",
                        protocol.as_str()
                    ));
                }
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems.push(format!("{key}.key_file: required with {key}.cert_file (mutual TLS)")),
            (None, Some(_)) => problems.push(format!("{key}.cert_file: required with {key}.key_file (mutual TLS)")),
            _ => {}
        }
        for (name, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push(format!("{key}.{name}: must not be empty"));
            }
        }
        let key_password = check_source(
            &mut problems,
            key,
            ("key_password_env", &self.key_password_env),
            ("key_password_file", &self.key_password_file),
        );
        if key_password && self.key_file.is_none() {
            problems.push(format!("{key}.key_password_env: set, but there is no {key}.key_file"));
        }
        match (&self.sasl, protocol.sasl()) {
            (None, true) => problems.push(format!(
                "{key}.sasl: required with {key}.protocol = \"{}\" (mechanism and credentials)",
                protocol.as_str()
            )),
            (Some(_), false) => problems.push(format!(
                "{key}.sasl: set, but {key}.protocol = \"{}\" does not authenticate; use sasl_ssl",
                protocol.as_str()
            )),
            (Some(sasl), true) => sasl.problems(&mut problems, &format!("{key}.sasl"), protocol),
            (None, false) => {}
        }
        problems
    }

    /// What the files the table names hold, checked now (`--check-config` and start-up): each must be
    /// readable, certificates and keys in PEM. The secrets' environment variables are read by
    /// [`resolve`](Self::resolve), at start-up.
    pub fn file_problems(&self, key: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let pem = [
            ("ca_file", &self.ca_file, "CERTIFICATE"),
            ("cert_file", &self.cert_file, "CERTIFICATE"),
            ("key_file", &self.key_file, "PRIVATE KEY"),
        ];
        for (name, path, label) in pem {
            let Some(path) = path else { continue };
            match read_bounded(path) {
                // `PRIVATE KEY` also matches `EC PRIVATE KEY`, `RSA PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`.
                Ok(text) if has_pem_block(&text, label) => {}
                Ok(_) => problems.push(format!("{key}.{name}: {} holds no PEM {label} block", path.display())),
                Err(e) => problems.push(format!("{key}.{name}: {}: {e}", path.display())),
            }
        }
        for source in self.secrets(key) {
            if let Secret::File(name, path) = source
                && let Err(e) = read_secret_file(path)
            {
                problems.push(format!("{name}: {}: {e}", path.display()));
            }
        }
        problems
    }

    /// The librdkafka properties this table sets, with the secrets read now from `env` and the files.
    /// `key` prefixes error messages (`kafka.security`).
    pub fn resolve(&self, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ClientSecurity, SecurityError> {
        let mut problems = self.problems(key);
        problems.extend(self.file_problems(key));
        if !problems.is_empty() {
            return Err(SecurityError::Invalid(problems));
        }
        let read = |source: Option<Secret<'_>>| source.map(|s| read_secret(s, env)).transpose();
        let mut props = Vec::new();
        let mut set = |k: &str, v: &str| props.push((k.to_owned(), v.to_owned()));
        set("security.protocol", self.protocol.as_str());
        if self.protocol.tls() {
            let path = |p: &Path| p.display().to_string();
            if let Some(ca) = &self.ca_file {
                set("ssl.ca.location", &path(ca));
            }
            if let (Some(cert), Some(private)) = (&self.cert_file, &self.key_file) {
                set("ssl.certificate.location", &path(cert));
                set("ssl.key.location", &path(private));
            }
            if let Some(pass) = read(self.key_password_source(key))? {
                set("ssl.key.password", &pass);
            }
            set(
                "ssl.endpoint.identification.algorithm",
                if self.verify_hostname { "https" } else { "none" },
            );
        }
        if let Some(sasl) = self.sasl.as_ref().filter(|_| self.protocol.sasl()) {
            set("sasl.mechanism", sasl.mechanism.as_str());
            if let Some(user) = &sasl.username {
                set("sasl.username", user);
            }
            if let Some(password) = read(sasl.password_source(&format!("{key}.sasl")))? {
                set("sasl.password", &password);
            }
            if let Some(oidc) = &sasl.oidc {
                set("sasl.oauthbearer.method", "oidc");
                set("sasl.oauthbearer.token.endpoint.url", &oidc.token_endpoint_url);
                set("sasl.oauthbearer.client.id", &oidc.client_id);
                if let Some(secret) = read(oidc.secret_source(&format!("{key}.sasl.oidc")))? {
                    set("sasl.oauthbearer.client.secret", &secret);
                }
                if let Some(scope) = &oidc.scope {
                    set("sasl.oauthbearer.scope", scope);
                }
                if !oidc.extensions.is_empty() {
                    let joined: Vec<String> = oidc.extensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    set("sasl.oauthbearer.extensions", &joined.join(","));
                }
            }
        }
        Ok(ClientSecurity(props))
    }

    /// Whether the client logs in with a user name (for error messages).
    pub fn username(&self) -> Option<&str> {
        self.sasl.as_ref().and_then(|s| s.username.as_deref())
    }

    fn key_password_source(&self, key: &str) -> Option<Secret<'_>> {
        source(
            key,
            ("key_password_env", &self.key_password_env),
            ("key_password_file", &self.key_password_file),
        )
    }

    /// Every secret source the table names.
    fn secrets(&self, key: &str) -> Vec<Secret<'_>> {
        let mut all = vec![self.key_password_source(key)];
        if let Some(sasl) = &self.sasl {
            all.push(sasl.password_source(&format!("{key}.sasl")));
            if let Some(oidc) = &sasl.oidc {
                all.push(oidc.secret_source(&format!("{key}.sasl.oidc")));
            }
        }
        all.into_iter().flatten().collect()
    }
}

impl SaslSection {
    fn problems(&self, problems: &mut Vec<String>, key: &str, protocol: SecurityProtocol) {
        let password = check_source(
            problems,
            key,
            ("password_env", &self.password_env),
            ("password_file", &self.password_file),
        );
        let mechanism = self.mechanism.as_str();
        match self.mechanism {
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                if self.username.as_ref().is_none_or(|u| u.trim().is_empty()) {
                    problems.push(format!("{key}.username: required with mechanism = \"{mechanism}\""));
                }
                if !password && self.password.is_none() {
                    problems.push(format!(
                        "{key}.password_env: required with mechanism = \"{mechanism}\" (or password_file)"
                    ));
                }
                if self.oidc.is_some() {
                    problems.push(format!("{key}.oidc: only for mechanism = \"OAUTHBEARER\""));
                }
            }
            SaslMechanism::OauthBearer => {
                for (name, set) in [("username", self.username.is_some()), ("password_env", password)] {
                    if set {
                        problems.push(format!(
                            "{key}.{name}: not used with mechanism = \"OAUTHBEARER\" (the token comes from {key}.oidc)"
                        ));
                    }
                }
                match &self.oidc {
                    None => problems.push(format!(
                        "{key}.oidc: required with mechanism = \"OAUTHBEARER\" (token endpoint and client credentials)"
                    )),
                    Some(oidc) => oidc.problems(problems, &format!("{key}.oidc")),
                }
            }
        }
        if protocol == SecurityProtocol::SaslPlaintext
            && matches!(self.mechanism, SaslMechanism::Plain | SaslMechanism::OauthBearer)
        {
            problems.push(format!(
                "{key}.mechanism: \"{mechanism}\" sends the credentials as they are; use protocol = \"sasl_ssl\""
            ));
        }
    }

    fn password_source(&self, key: &str) -> Option<Secret<'_>> {
        source(
            key,
            ("password_env", &self.password_env),
            ("password_file", &self.password_file),
        )
    }
}

impl OidcSection {
    fn problems(&self, problems: &mut Vec<String>, key: &str) {
        if !self.token_endpoint_url.starts_with("https://") {
            problems.push(format!(
                "{key}.token_endpoint_url: `{}` must be an https:// URL (the client secret is sent to it)",
                self.token_endpoint_url
            ));
        }
        if self.client_id.trim().is_empty() {
            problems.push(format!("{key}.client_id: must not be empty"));
        }
        let secret = check_source(
            problems,
            key,
            ("client_secret_env", &self.client_secret_env),
            ("client_secret_file", &self.client_secret_file),
        );
        if !secret && self.client_secret.is_none() {
            problems.push(format!("{key}.client_secret_env: required (or client_secret_file)"));
        }
        if self.scope.as_ref().is_some_and(|s| s.trim().is_empty()) {
            problems.push(format!("{key}.scope: must not be empty when set"));
        }
        for (k, v) in &self.extensions {
            let bad = |s: &str| s.is_empty() || s.contains([',', '=']);
            if bad(k) || bad(v) {
                problems.push(format!(
                    "{key}.extensions.{k}: names and values must be non-empty and hold no `,` or `=`"
                ));
            }
        }
    }

    fn secret_source(&self, key: &str) -> Option<Secret<'_>> {
        source(
            key,
            ("client_secret_env", &self.client_secret_env),
            ("client_secret_file", &self.client_secret_file),
        )
    }
}

/// Checks one env-or-file pair (`r1_config::secret`); whether a source is set.
pub(crate) fn check_source(
    problems: &mut Vec<String>,
    key: &str,
    (env_name, env): (&str, &Option<String>),
    (file_name, file): (&str, &Option<PathBuf>),
) -> bool {
    r1_config::secret::pair_problems(
        problems,
        (&format!("{key}.{env_name}"), env.as_deref()),
        (&format!("{key}.{file_name}"), file.as_deref()),
    )
}

pub(crate) fn source<'a>(
    key: &str,
    (env_name, env): (&str, &'a Option<String>),
    (file_name, file): (&str, &'a Option<PathBuf>),
) -> Option<Secret<'a>> {
    match (env, file) {
        (_, Some(file)) => Some(Secret::File(format!("{key}.{file_name}"), file)),
        (Some(var), None) => Some(Secret::Env(format!("{key}.{env_name}"), var)),
        (None, None) => None,
    }
}

pub(crate) fn has_pem_block(text: &[u8], label: &str) -> bool {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{label}-----")))
}

pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path)?, MAX_FILE_BYTES),
        &mut bytes,
    )?;
    Ok(bytes)
}

/// One secret, read now from its environment variable (through `env`) or its file.
pub(crate) fn read_secret(source: Secret<'_>, env: &dyn Fn(&str) -> Option<String>) -> Result<String, SecurityError> {
    match source {
        Secret::Env(name, var) => match env(var) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(SecurityError::EnvUnset {
                key: name,
                var: var.to_owned(),
            }),
        },
        Secret::File(name, path) => read_secret_file(path).map_err(|e| SecurityError::File {
            key: name,
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// A secret file's content without its trailing newlines; empty is an error.
pub(crate) fn read_secret_file(path: &Path) -> std::io::Result<String> {
    let bytes = r1_config::secret::read_file(path, MAX_FILE_BYTES)?;
    let secret = String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))?;
    if secret.is_empty() {
        return Err(std::io::Error::other("empty"));
    }
    Ok(secret)
}

/// Why the security settings could not be turned into client properties.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The table is invalid, or a file it names is unreadable; one `key.path: problem` line each.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A secret's environment variable is not set (or empty).
    #[error("{key}: environment variable {var} is not set or empty")]
    EnvUnset {
        /// The config key naming the variable.
        key: String,
        /// The variable.
        var: String,
    },
    /// A secret's file could not be read.
    #[error("{key}: {}: {message}", path.display())]
    File {
        /// The config key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl SecurityError {
    /// One `key.path: problem` line per problem.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid(problems) => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// The librdkafka properties of a [`SecuritySection`], secrets included. Its `Debug` shows the
/// property names and the non-secret values only. The default is plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecurity(Vec<(String, String)>);

impl Default for ClientSecurity {
    fn default() -> Self {
        Self(vec![("security.protocol".to_owned(), "plaintext".to_owned())])
    }
}

/// Properties whose values are secrets (never logged, never shown by `Debug`).
const SECRET_PROPERTIES: [&str; 4] = [
    "sasl.password",
    "ssl.key.password",
    "sasl.oauthbearer.client.secret",
    "ssl.keystore.password",
];

impl ClientSecurity {
    /// The properties, in the order they are set.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// One property's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in self.properties() {
            if SECRET_PROPERTIES.contains(&k) {
                map.entry(&k, &"<redacted>");
            } else {
                map.entry(&k, &v);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> SecuritySection {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(problems: &[String]) -> Vec<&str> {
        problems
            .iter()
            .map(|p| p.split(": ").next().unwrap_or_default())
            .collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn absent_is_plaintext_without_authentication() {
        let s = SecuritySection::default();
        assert!(s.problems("kafka.security").is_empty());
        let props = s.resolve("kafka.security", &no_env).unwrap();
        assert_eq!(props.get("security.protocol"), Some("plaintext"));
        assert_eq!(props.properties().count(), 1);
    }

    #[test]
    fn a_literal_secret_is_refused_with_its_key() {
        let s = section(
            r#"
            protocol = "sasl_ssl"
            key_password = "hunter2"
            [sasl]
            mechanism = "SCRAM-SHA-512"
            username = "u"
            password = "hunter2"
            "#,
        );
        let problems = s.problems("kafka.security");
        assert_eq!(
            keys(&problems),
            ["kafka.security.key_password", "kafka.security.sasl.password"]
        );
        assert!(problems[1].contains("password_env"), "{problems:?}");
        assert!(
            !format!("{s:?}").contains("hunter2"),
            "the refused value is not even kept"
        );
        let s = section(
            r#"
            protocol = "sasl_ssl"
            [sasl]
            mechanism = "OAUTHBEARER"
            oidc = { token_endpoint_url = "https://idp/token", client_id = "c", client_secret = "s3cret" }
            "#,
        );
        assert_eq!(
            keys(&s.problems("center.kafka.security")),
            ["center.kafka.security.sasl.oidc.client_secret"]
        );
    }

    #[test]
    fn mechanism_and_protocol_combinations_are_checked() {
        let cases: [(&str, &[&str]); 8] = [
            // SASL without a sasl_* protocol.
            (
                "protocol = \"ssl\"\n[sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"u\"\npassword_env = \"P\"",
                &["k.sasl"],
            ),
            // A sasl_* protocol without SASL.
            ("protocol = \"sasl_ssl\"", &["k.sasl"]),
            // TLS files without TLS.
            (
                "ca_file = \"/ca.pem\"\nverify_hostname = false",
                &["k.ca_file", "k.verify_hostname"],
            ),
            // PLAIN in the clear.
            (
                "protocol = \"sasl_plaintext\"\n[sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword_file = \"/p\"",
                &["k.sasl.mechanism"],
            ),
            // SCRAM needs a user and a password source, one only.
            (
                "protocol = \"sasl_ssl\"\n[sasl]\nmechanism = \"SCRAM-SHA-512\"",
                &["k.sasl.username", "k.sasl.password_env"],
            ),
            (
                "protocol = \"sasl_ssl\"\n[sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_env = \"1P\"\npassword_file = \"/p\"",
                &["k.sasl.password_file", "k.sasl.password_env"],
            ),
            // OAUTHBEARER needs OIDC, and no user/password.
            (
                "protocol = \"sasl_ssl\"\n[sasl]\nmechanism = \"OAUTHBEARER\"\nusername = \"u\"",
                &["k.sasl.username", "k.sasl.oidc"],
            ),
            // mTLS needs both halves.
            (
                "protocol = \"ssl\"\ncert_file = \"/c.pem\"\nkey_password_env = \"K\"",
                &["k.key_file", "k.key_password_env"],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(keys(&section(text).problems("k")), expected, "{text}");
        }
        let oidc = section(
            "protocol = \"sasl_ssl\"\n[sasl]\nmechanism = \"OAUTHBEARER\"\n[sasl.oidc]\ntoken_endpoint_url = \"http://idp/token\"\nclient_id = \" \"",
        );
        assert_eq!(
            keys(&oidc.problems("k")),
            [
                "k.sasl.oidc.token_endpoint_url",
                "k.sasl.oidc.client_id",
                "k.sasl.oidc.client_secret_env"
            ]
        );
    }

    #[test]
    fn unknown_mechanisms_and_protocols_are_refused_by_name() {
        let err = toml::from_str::<SecuritySection>("protocol = \"sasl_ssl\"\n[sasl]\nmechanism = \"GSSAPI\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("GSSAPI") && err.contains("SCRAM-SHA-512"), "{err}");
        let err = toml::from_str::<SecuritySection>("protocol = \"tls\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls") && err.contains("sasl_ssl"), "{err}");
    }

    #[test]
    fn files_are_read_and_secrets_resolved_from_env_or_file() {
        let dir = std::env::temp_dir().join(format!("r1-kafka-security-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "from-a-file\n").unwrap();
        let text = |ca: &Path, source: &str| {
            format!(
                "protocol = \"sasl_ssl\"\nca_file = \"{}\"\n[sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\n{source}\n",
                ca.display()
            )
        };
        let by_file = section(&text(&ca, &format!("password_file = \"{}\"", password.display())));
        assert!(by_file.file_problems("k").is_empty());
        let props = by_file.resolve("k", &no_env).unwrap();
        assert_eq!(props.get("sasl.password"), Some("from-a-file"));
        assert_eq!(props.get("ssl.ca.location"), ca.to_str());
        assert_eq!(props.get("ssl.endpoint.identification.algorithm"), Some("https"));
        assert_eq!(props.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert!(!format!("{props:?}").contains("from-a-file"), "Debug redacts secrets");

        let by_env = section(&text(&ca, "password_env = \"R1_KAFKA_PASSWORD\""));
        let env = |name: &str| (name == "R1_KAFKA_PASSWORD").then(|| "from-env".to_owned());
        assert_eq!(
            by_env.resolve("k", &env).unwrap().get("sasl.password"),
            Some("from-env")
        );
        assert_eq!(
            by_env.resolve("k", &no_env).unwrap_err().to_string(),
            "k.sasl.password_env: environment variable R1_KAFKA_PASSWORD is not set or empty"
        );

        let missing = section(&text(
            &dir.join("nope.pem"),
            &format!("password_file = \"{}\"", dir.join("nope").display()),
        ));
        assert_eq!(keys(&missing.file_problems("k")), ["k.ca_file", "k.sasl.password_file"]);
        let not_pem = section(&text(&password, "password_env = \"P\""));
        assert!(
            not_pem.file_problems("k")[0].contains("no PEM"),
            "{:?}",
            not_pem.file_problems("k")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn oidc_becomes_librdkafkas_client_credentials_settings() {
        let s = section(
            r#"
            protocol = "sasl_ssl"
            [sasl]
            mechanism = "OAUTHBEARER"
            [sasl.oidc]
            token_endpoint_url = "https://idp.example/oauth2/token"
            client_id = "r1-gateway"
            client_secret_env = "R1_KAFKA_CLIENT_SECRET"
            scope = "kafka"
            extensions = { logicalCluster = "lkc-1", identityPoolId = "pool-2" }
            "#,
        );
        let env = |_: &str| Some("shh".to_owned());
        let props = s.resolve("k", &env).unwrap();
        for (k, v) in [
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            (
                "sasl.oauthbearer.token.endpoint.url",
                "https://idp.example/oauth2/token",
            ),
            ("sasl.oauthbearer.client.id", "r1-gateway"),
            ("sasl.oauthbearer.client.secret", "shh"),
            ("sasl.oauthbearer.scope", "kafka"),
            (
                "sasl.oauthbearer.extensions",
                "identityPoolId=pool-2,logicalCluster=lkc-1",
            ),
        ] {
            assert_eq!(props.get(k), Some(v), "{k}");
        }
        assert_eq!(props.get("sasl.username"), None);
    }
}
