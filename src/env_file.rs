//! A service's environment file (`--env-file`, `SHELFSYNC_ENV_FILE`), read the way systemd
//! reads an `EnvironmentFile=` (systemd.exec(5)): `KEY=VALUE` lines, blank lines and lines
//! starting with `#` or `;` ignored, a value in single quotes taken as it is, one in double
//! quotes with `\"`, `\\` and `\$` unescaped, a line ending in `\` continued on the next.
//! It is not a shell script: `&`, spaces and `$` in a value are the value's own.
//!
//! So the operator's `shelfsync check`, `rebuild` and `export` read the same settings as the
//! service they run next to (deploy/production/shelfsync.env.example).

use std::path::Path;

use anyhow::{bail, Context};

/// The variables of the file, in order; a line that is not `KEY=VALUE` is an error naming
/// the file and the line.
pub fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the environment file {}", path.display()))?;
    parse(&text).with_context(|| format!("in the environment file {}", path.display()))
}

/// Sets each variable of the file that the environment does not have already (a variable
/// exported in the shell wins, so that one can be pointed elsewhere for one command).
/// Call before any other thread starts: it changes the process's environment.
pub fn apply(path: &Path) -> anyhow::Result<()> {
    for (key, value) in read(path)? {
        if std::env::var_os(&key).is_none() {
            std::env::set_var(key, value);
        }
    }
    Ok(())
}

fn parse(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let mut line = line.trim().to_owned();
        // A line ending in a backslash goes on (systemd joins them with a space).
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => {
                    line.push(' ');
                    line.push_str(next.trim());
                }
                None => break,
            }
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: not KEY=VALUE", i + 1);
        };
        let key = key.trim();
        let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("line {}: {key:?} is not a variable name", i + 1);
        }
        let value = unquote(value.trim()).with_context(|| format!("line {}", i + 1))?;
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

fn unquote(value: &str) -> anyhow::Result<String> {
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('\'') {
        return Ok(value[1..value.len() - 1].to_owned());
    }
    if !quoted('"') {
        return Ok(value.to_owned());
    }
    let mut out = String::new();
    let mut chars = value[1..value.len() - 1].chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
            Some('n') => out.push('\n'),
            Some(e) => {
                out.push('\\');
                out.push(e);
            }
            None => bail!("a double-quoted value ends in a lone backslash"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_what_systemd_reads() {
        let text = "# a comment\n; another\n\n\
            SHELFSYNC__MONGO__URI=mongodb://u:p@m1,m2/?replicaSet=rs0&authSource=admin\n\
            SHELFSYNC__API_KEYS=[{key=\"k\",role=\"admin\",label=\"head office\"}]\n\
            SINGLE='a \"b\" $c'\n\
            DOUBLE=\"x \\\"y\\\" \\$z \\\\ \\q\"\n\
            SPACED = v w \n\
            EMPTY=\n\
            LONG=one \\\n  two\n";
        let vars = parse(text).unwrap();
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    "SHELFSYNC__MONGO__URI",
                    "mongodb://u:p@m1,m2/?replicaSet=rs0&authSource=admin"
                ),
                (
                    "SHELFSYNC__API_KEYS",
                    "[{key=\"k\",role=\"admin\",label=\"head office\"}]"
                ),
                ("SINGLE", "a \"b\" $c"),
                ("DOUBLE", "x \"y\" $z \\ \\q"),
                ("SPACED", "v w"),
                ("EMPTY", ""),
                ("LONG", "one  two"),
            ]
        );
    }

    #[test]
    fn a_line_that_is_not_an_assignment_is_refused_by_its_number() {
        let e = parse("A=1\nexport B=2\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let e = parse("A=1\n\njust words\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 3: not KEY=VALUE"), "{e:#}");
        assert!(parse("A=\"x\\\"\n").is_err());
    }
}
