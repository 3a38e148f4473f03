//! A small argument parser: positionals, `--flag`, `--option VALUE` and `--option=VALUE`,
//! `--` to end the options, `-h`/`--help`.

use super::CliError;

/// How an option is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Its name, with the dashes: `--limit`.
    pub name: &'static str,
    /// Whether it takes a value.
    pub value: bool,
}

/// The parsed arguments of one subcommand.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// The positionals, in order.
    pub positionals: Vec<String>,
    /// The options as given, in order: (name, value).
    pub options: Vec<(&'static str, Option<String>)>,
    /// Whether `-h`/`--help` was given.
    pub help: bool,
}

impl Parsed {
    /// Whether the flag `name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| *n == name)
    }

    /// The last value of option `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of option `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
}

/// Parses `args` of subcommand `command` against `specs`.
pub(crate) fn parse(command: &str, args: &[String], specs: &[Spec]) -> Result<Parsed, CliError> {
    let mut parsed = Parsed::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            parsed.positionals.extend(it.by_ref().cloned());
            break;
        }
        if arg == "-h" || arg == "--help" {
            parsed.help = true;
            continue;
        }
        if arg == "-" || !arg.starts_with('-') {
            parsed.positionals.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(CliError::usage(format!(
                "{command}: unknown option {name} (see `leakguard help {command}`)"
            )));
        };
        let value = match (spec.value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => match it.next() {
                Some(v) => Some(v.clone()),
                None => {
                    return Err(CliError::usage(format!(
                        "{command}: {name} needs a value (see `leakguard help {command}`)"
                    )));
                }
            },
            (false, Some(_)) => {
                return Err(CliError::usage(format!("{command}: {name} takes no value")));
            }
            (false, None) => None,
        };
        parsed.options.push((spec.name, value));
    }
    Ok(parsed)
}

/// The one positional a subcommand takes, named `what` in errors.
pub(crate) fn one_positional<'a>(
    command: &str,
    parsed: &'a Parsed,
    what: &str,
) -> Result<&'a str, CliError> {
    match parsed.positionals.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::usage(format!(
            "{command}: missing {what} (see `leakguard help {command}`)"
        ))),
        [_, extra, ..] => Err(CliError::usage(format!(
            "{command}: unexpected argument {extra:?}: give one {what}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec {
            name: "--limit",
            value: true,
        },
        Spec {
            name: "--json",
            value: false,
        },
    ];

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_in_both_spellings_and_positionals() {
        let p = parse("analyze", &words("f.csv --limit 2G --json"), SPECS).unwrap();
        assert_eq!(p.positionals, ["f.csv"]);
        assert_eq!(p.value("--limit"), Some("2G"));
        assert!(p.flag("--json"));
        let p = parse("analyze", &words("--limit=512MiB - "), SPECS).unwrap();
        assert_eq!(p.value("--limit"), Some("512MiB"));
        assert_eq!(p.positionals, ["-"]);
        let p = parse("analyze", &words("-- --json"), SPECS).unwrap();
        assert_eq!(p.positionals, ["--json"]);
    }

    #[test]
    fn unknown_and_incomplete_options_are_usage_errors() {
        for bad in ["--nope", "f --limit", "--json=1"] {
            let e = parse("analyze", &words(bad), SPECS).unwrap_err();
            assert_eq!(e.code, 2, "{bad}");
        }
    }
}
