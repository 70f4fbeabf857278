//! Loading r1-hybrid's configuration files: read, parse into a typed tree, validate, report every problem.
//!
//! Each binary defines its own serde tree (`deny_unknown_fields`, a doc comment per field) and
//! implements [`Validate`]; this crate does the rest the same way for all of them, so an operator
//! sees one error format everywhere: `path: N problem(s)` followed by one `key.path: what is wrong`
//! line per problem.

pub mod secret;

use std::path::Path;

use serde::de::DeserializeOwned;

/// Checks a parsed configuration beyond what its types express.
pub trait Validate {
    /// One `key.path: what is wrong` line per problem, all of them, in file order; empty when valid.
    fn problems(&self) -> Vec<String>;
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML for the schema (unknown key, wrong type, missing key); the message names the key and line.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// Parsed, but some values are invalid; every problem is listed with its key path.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// The file.
        path: String,
        /// One `key.path: what is wrong` line per problem.
        problems: Vec<String>,
    },
}

/// Reads, parses and validates the file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

/// Parses and validates TOML `text`; `name` labels errors (a file path, or something like `<stdin>`).
pub fn parse<T: DeserializeOwned + Validate>(text: &str, name: &str) -> Result<T, ConfigError> {
    let config: T = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: name.to_owned(),
        message: e.to_string(),
    })?;
    let problems = config.problems();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: name.to_owned(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        low: u32,
        high: u32,
    }

    impl Validate for Sample {
        fn problems(&self) -> Vec<String> {
            let mut problems = Vec::new();
            if self.low > 10 {
                problems.push("low: must be at most 10".to_owned());
            }
            if self.high < self.low {
                problems.push("high: must not be below low".to_owned());
            }
            problems
        }
    }

    #[test]
    fn valid_text_parses() {
        let s: Sample = parse("low = 1\nhigh = 2\n", "t").unwrap();
        assert_eq!((s.low, s.high), (1, 2));
    }

    #[test]
    fn all_problems_are_reported_with_the_file_name() {
        let err = parse::<Sample>("low = 11\nhigh = 3\n", "gw.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "gw.toml: 2 problem(s):\n  low: must be at most 10\n  high: must not be below low"
        );
    }

    #[test]
    fn unknown_keys_and_missing_files_name_what_is_wrong() {
        let err = parse::<Sample>("low = 1\nhigh = 2\nhihg = 3\n", "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gw.toml: ") && err.contains("hihg"), "{err}");
        let err = load::<Sample>(Path::new("/nonexistent/gw.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/gw.toml: "), "{err}");
    }
}
