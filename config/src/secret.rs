//! Secrets a configuration file names by where they live — an environment variable (`*_env`) or a file
//! (`*_file`) — never by value: the checks and the file read every such pair shares.

use std::path::Path;

/// Whether `name` can be an environment variable's name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The problems of one env-or-file pair, each naming its full key: both set, a variable name that
/// cannot be one, an empty path. Whether either is set.
pub fn pair_problems(
    problems: &mut Vec<String>,
    (env_key, env): (&str, Option<&str>),
    (file_key, file): (&str, Option<&Path>),
) -> bool {
    if env.is_some() && file.is_some() {
        problems.push(format!("{file_key}: set either {env_key} or {file_key}, not both"));
    }
    if let Some(name) = env
        && !is_env_name(name)
    {
        problems.push(format!("{env_key}: `{name}` is not an environment variable name"));
    }
    if file.is_some_and(|f| f.as_os_str().is_empty()) {
        problems.push(format!("{file_key}: must not be empty"));
    }
    env.is_some() || file.is_some()
}

/// A secret file's content, at most `max` bytes read, without its trailing line ends.
pub fn read_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(path)?, max), &mut bytes)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_names_each_problem_by_its_key() {
        let mut problems = Vec::new();
        assert!(pair_problems(
            &mut problems,
            ("a.x_env", Some("1BAD")),
            ("a.x_file", Some(Path::new("")))
        ));
        assert_eq!(
            problems,
            [
                "a.x_file: set either a.x_env or a.x_file, not both",
                "a.x_env: `1BAD` is not an environment variable name",
                "a.x_file: must not be empty",
            ]
        );
        let mut none = Vec::new();
        assert!(!pair_problems(&mut none, ("a.x_env", None), ("a.x_file", None)));
        assert!(none.is_empty());
        assert!(is_env_name("R1_KAFKA_PASSWORD") && !is_env_name("") && !is_env_name("A-B"));
    }
}
