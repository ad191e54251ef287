//! A service's environment file (`--env-file`, `SHELFSYNC_ENV_FILE`), read the way systemd
//! reads an `EnvironmentFile=` (systemd.exec(5); the state machine of systemd's
//! `src/basic/env-file.c`): `KEY=VALUE` lines; blank lines and lines starting with `#` or `;`
//! are comments; whitespace around the key and before the value is dropped, and after an
//! unquoted value too; outside quotes a backslash takes the next character as it is, and
//! before a line's end continues the value on the next line; inside single quotes everything
//! is taken as it is, newlines too; inside double quotes a backslash escapes `"`, `\`, `` ` ``
//! and `$` only. A later assignment of a key replaces an earlier one. It is not a shell
//! script: `&`, spaces and `$` in a value are the value's own.
//!
//! Where systemd ignores a line (no `=`, a key that is not a variable name), this refuses the
//! file, naming the line: an operator's check should not pass a file the service reads
//! differently from what it says.
//!
//! So the operator's `shelfsync check`, `rebuild` and `export` read the same settings as the
//! service they run next to (deploy/production/shelfsync.env.example).

use std::path::Path;

use anyhow::{bail, Context};

/// The variables of the file, in order, each once (its last assignment); a line that is not
/// `KEY=VALUE` is an error naming the file and the line.
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

#[derive(Clone, Copy, PartialEq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
}

fn parse(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    use State::*;
    let mut vars: Vec<(String, String)> = Vec::new();
    let (mut key, mut value) = (String::new(), String::new());
    // Where the key began, and the value's length without its trailing whitespace.
    let (mut line, mut key_line, mut value_end) = (1usize, 1usize, 0usize);
    let mut state = PreKey;
    let mut push = |key: &mut String, value: &mut String, at: usize| -> anyhow::Result<()> {
        let k = key.trim_end();
        let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("line {at}: {k:?} is not a variable name");
        }
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_owned(), std::mem::take(value)));
        key.clear();
        Ok(())
    };
    for c in text.chars() {
        match state {
            PreKey => match c {
                '#' | ';' => state = Comment,
                '\n' => {}
                c if c.is_whitespace() => {}
                c => {
                    key.push(c);
                    key_line = line;
                    state = Key;
                }
            },
            Key => match c {
                '\n' => bail!("line {key_line}: not KEY=VALUE"),
                '=' => state = PreValue,
                c => key.push(c),
            },
            PreValue => match c {
                '\n' => {
                    push(&mut key, &mut value, key_line)?;
                    state = PreKey;
                }
                '\'' => state = SingleQuote,
                '"' => state = DoubleQuote,
                '\\' => state = ValueEscape,
                c if c.is_whitespace() => {}
                c => {
                    value.push(c);
                    value_end = value.len();
                    state = Value;
                }
            },
            Value => match c {
                '\n' => {
                    value.truncate(value_end);
                    push(&mut key, &mut value, key_line)?;
                    state = PreKey;
                }
                '\\' => state = ValueEscape,
                c => {
                    value.push(c);
                    if !c.is_whitespace() {
                        value_end = value.len();
                    }
                }
            },
            ValueEscape => {
                // A backslash before the line's end continues the value.
                if c != '\n' {
                    value.push(c);
                    value_end = value.len();
                }
                state = Value;
            }
            SingleQuote => match c {
                '\'' => {
                    value_end = value.len();
                    state = PreValue;
                }
                c => value.push(c),
            },
            DoubleQuote => match c {
                '"' => {
                    value_end = value.len();
                    state = PreValue;
                }
                '\\' => state = DoubleQuoteEscape,
                c => value.push(c),
            },
            DoubleQuoteEscape => {
                match c {
                    '"' | '\\' | '`' | '$' => value.push(c),
                    '\n' => {}
                    c => {
                        value.push('\\');
                        value.push(c);
                    }
                }
                state = DoubleQuote;
            }
            Comment => {
                if c == '\n' {
                    state = PreKey;
                }
            }
        }
        if c == '\n' {
            line += 1;
        }
    }
    match state {
        PreKey | Comment => {}
        Key => bail!("line {key_line}: not KEY=VALUE"),
        SingleQuote | DoubleQuote | DoubleQuoteEscape => {
            bail!("line {key_line}: a quote is not closed")
        }
        Value | ValueEscape => {
            value.truncate(value_end);
            push(&mut key, &mut value, key_line)?;
        }
        PreValue => push(&mut key, &mut value, key_line)?,
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn parsed(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_systemd_reads() {
        let text = "# a comment\n; another\n\n\
            SHELFSYNC__MONGO__URI=mongodb://u:p@m1,m2/?replicaSet=rs0&authSource=admin\n\
            SHELFSYNC__API_KEYS=[{key=\"k\",role=\"admin\",label=\"head office\"}]\n\
            SINGLE='a \"b\" $c \\d'\n\
            DOUBLE=\"x \\\"y\\\" \\$z \\\\ \\q \\n\"\n\
            SPACED = v w \n\
            EMPTY=\n\
            BARE=a\\ b\\\\c\n\
            GLUED='a'b\"c\"\n\
            LONG=one \\\n  two\n\
            # a comment that ends in a backslash \\\n\
            AFTER=1\n\
            SPACED=again";
        assert_eq!(
            parsed(text),
            pairs(&[
                (
                    "SHELFSYNC__MONGO__URI",
                    "mongodb://u:p@m1,m2/?replicaSet=rs0&authSource=admin"
                ),
                (
                    "SHELFSYNC__API_KEYS",
                    "[{key=\"k\",role=\"admin\",label=\"head office\"}]"
                ),
                ("SINGLE", "a \"b\" $c \\d"),
                ("DOUBLE", "x \"y\" $z \\ \\q \\n"),
                ("EMPTY", ""),
                ("BARE", "a b\\c"),
                // After a closing quote the value goes on unquoted: a quote there is a character.
                ("GLUED", "ab\"c\""),
                // The backslash and the line's end go; the next line's spaces stay.
                ("LONG", "one   two"),
                ("AFTER", "1"),
                // A later assignment replaces an earlier one, as the service would see it.
                ("SPACED", "again"),
            ])
        );
        // A value in quotes may run over lines.
        assert_eq!(parsed("A='x\ny'\n"), pairs(&[("A", "x\ny")]));
    }

    #[test]
    fn a_line_systemd_would_skip_is_refused_by_its_number() {
        let e = parse("A=1\nexport B=2\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("line 2: \"export B\" is not a variable name"),
            "{e:#}"
        );
        let e = parse("A=1\n\njust words\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 3: not KEY=VALUE"), "{e:#}");
        let e = parse("A=\"x\\\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("line 1: a quote is not closed"),
            "{e:#}"
        );
    }
}
