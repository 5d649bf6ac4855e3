//! Settings an application declares: values its sagas are built with,
//! given on the command line (or in the environment) of the processes that
//! run them, like annals' own flags.
//!
//! A [`Setting`] becomes a flag of `annals serve` and `annals command-api`
//! (its name in kebab case, with `-ms` after a duration's), with an
//! environment variable (`ANNALS_` and the flag in upper snake case), a
//! default and a help line. The parsed values reach the saga setup as
//! [`Settings`].

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};

/// The subcommands that run sagas, and so take the settings.
pub(crate) const SUBCOMMANDS: [&str; 2] = ["serve", "command-api"];

/// A value the application reads from its command line.
///
/// ```
/// use std::time::Duration;
/// use annals::{Setting, SettingError, Settings};
///
/// let expiry = Setting::duration(
///     "task-expiry",
///     Duration::from_secs(3600),
///     "A task the expiry saga reaches this long after it was added is completed",
/// );
/// let batch = Setting::number("reminder-batch", 50, "Reminders sent at once");
/// assert_eq!(expiry.flag(), "--task-expiry-ms");
/// assert_eq!(expiry.env(), "ANNALS_TASK_EXPIRY_MS");
/// assert_eq!(batch.flag(), "--reminder-batch");
///
/// // A process given neither flag nor variable builds its sagas with the
/// // defaults; asking for what was not declared is an error naming it.
/// let settings = Settings::defaults(&[expiry, batch]);
/// assert_eq!(settings.duration("task-expiry"), Ok(Duration::from_secs(3600)));
/// assert_eq!(settings.number("reminder-batch"), Ok(50));
/// assert_eq!(
///     settings.duration("task-expiry-typo"),
///     Err(SettingError::Undeclared("task-expiry-typo".into()))
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    name: String,
    help: String,
    kind: Kind,
}

/// What a setting holds, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Given in whole milliseconds, at least 1.
    Duration(Duration),
    /// A whole number, 0 or more.
    Number(u64),
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Duration(_) => "duration",
            Kind::Number(_) => "number",
        }
    }
}

impl Setting {
    /// A duration given in milliseconds: the flag is `--<name>-ms`, at
    /// least 1. `help` says what it is for (one sentence; the unit and the
    /// default are added).
    pub fn duration(name: impl Into<String>, default: Duration, help: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind: Kind::Duration(default),
        }
    }

    /// A whole number (0 or more): the flag is `--<name>`.
    pub fn number(name: impl Into<String>, default: u64, help: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind: Kind::Number(default),
        }
    }

    /// The name the saga setup asks for it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The flag that sets it, e.g. `--order-decision-timeout-ms`.
    pub fn flag(&self) -> String {
        format!("--{}", self.long())
    }

    /// The environment variable that sets it when the flag is not given.
    pub fn env(&self) -> String {
        format!("ANNALS_{}", self.long().to_uppercase().replace('-', "_"))
    }

    fn long(&self) -> String {
        match self.kind {
            Kind::Duration(_) => format!("{}-ms", self.name),
            Kind::Number(_) => self.name.clone(),
        }
    }

    /// The clap argument; its id is the setting's name.
    fn arg(&self) -> Arg {
        let arg = Arg::new(self.name.clone())
            .long(self.long())
            .env(self.env())
            .help(self.help.clone());
        match self.kind {
            Kind::Duration(default) => arg
                .value_name("MS")
                .value_parser(clap::value_parser!(u64).range(1..))
                .default_value(default.as_millis().max(1).to_string()),
            Kind::Number(default) => arg
                .value_name("N")
                .value_parser(clap::value_parser!(u64))
                .default_value(default.to_string()),
        }
    }

    /// Why the name cannot be a flag: it must be kebab case (lower-case
    /// letters and digits in words joined by `-`), starting with a letter.
    fn check_name(&self) -> Result<(), String> {
        let name = &self.name;
        let words_ok = name.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if words_ok && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            Ok(())
        } else {
            Err(format!(
                "the setting {name:?} needs a kebab-case name (e.g. \"order-decision-timeout\")"
            ))
        }
    }
}

/// Adds `settings` to each subcommand that runs sagas. Fails on a name that
/// is no flag, declared twice, or taken by one of annals' own flags.
pub(crate) fn add_to(mut command: Command, settings: &[Setting]) -> Result<Command, String> {
    let mut seen = std::collections::BTreeSet::new();
    for setting in settings {
        setting.check_name()?;
        if !seen.insert(setting.name.as_str()) {
            return Err(format!("the setting {:?} is declared twice", setting.name));
        }
    }
    for name in SUBCOMMANDS {
        let Some(sub) = command.find_subcommand(name) else {
            return Err(format!("annals has no subcommand {name}"));
        };
        for setting in settings {
            let long = setting.long();
            let id = setting.name.as_str();
            if let Some(taken) = sub
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()) || a.get_id() == id)
            {
                return Err(format!(
                    "the setting {:?} would be the flag --{}, which `annals {name}` has already ({})",
                    setting.name,
                    long,
                    taken.get_id()
                ));
            }
        }
        command = command.mut_subcommand(name, |sub| {
            settings
                .iter()
                .fold(sub, |sub, setting| sub.arg(setting.arg()))
        });
    }
    Ok(command)
}

/// The values of the application's settings in one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, Kind>,
}

/// A setting asked for that the application did not declare (or declared
/// as another kind): a mistake in the application, reported at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    #[error("the application declares no setting {0:?} (App::setting)")]
    Undeclared(String),
    #[error("the setting {name:?} is a {declared}, not a {asked}")]
    OtherKind {
        name: String,
        declared: &'static str,
        asked: &'static str,
    },
}

impl Settings {
    /// The defaults of `declared`, as a process given no flag would have.
    pub fn defaults(declared: &[Setting]) -> Self {
        Self {
            values: declared.iter().map(|s| (s.name.clone(), s.kind)).collect(),
        }
    }

    /// The values parsed from a subcommand's arguments (`matches`); a
    /// setting not among them keeps its default.
    pub(crate) fn from_matches(declared: &[Setting], matches: &ArgMatches) -> Self {
        let mut settings = Self::defaults(declared);
        for setting in declared {
            let given = matches
                .try_get_one::<u64>(&setting.name)
                .ok()
                .flatten()
                .copied();
            let (Some(value), Some(slot)) = (given, settings.values.get_mut(&setting.name)) else {
                continue;
            };
            *slot = match setting.kind {
                Kind::Duration(_) => Kind::Duration(Duration::from_millis(value)),
                Kind::Number(_) => Kind::Number(value),
            };
        }
        settings
    }

    /// The duration setting `name`.
    pub fn duration(&self, name: &str) -> Result<Duration, SettingError> {
        match self.get(name)? {
            Kind::Duration(value) => Ok(value),
            other => Err(self.other_kind(name, other, "duration")),
        }
    }

    /// The number setting `name`.
    pub fn number(&self, name: &str) -> Result<u64, SettingError> {
        match self.get(name)? {
            Kind::Number(value) => Ok(value),
            other => Err(self.other_kind(name, other, "number")),
        }
    }

    fn get(&self, name: &str) -> Result<Kind, SettingError> {
        self.values
            .get(name)
            .copied()
            .ok_or_else(|| SettingError::Undeclared(name.to_owned()))
    }

    fn other_kind(&self, name: &str, declared: Kind, asked: &'static str) -> SettingError {
        SettingError::OtherKind {
            name: name.to_owned(),
            declared: declared.what(),
            asked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> Setting {
        Setting::duration("decision-timeout", Duration::from_secs(30), "How long")
    }

    fn command() -> Command {
        Command::new("annals")
            .subcommand(Command::new("serve").arg(Arg::new("listen").long("listen")))
            .subcommand(Command::new("command-api"))
    }

    fn parse(settings: &[Setting], args: &[&str]) -> Result<Settings, clap::Error> {
        let matches = add_to(command(), settings)
            .unwrap()
            .try_get_matches_from(args)?;
        let (_, sub) = matches.subcommand().unwrap();
        Ok(Settings::from_matches(settings, sub))
    }

    #[test]
    fn a_setting_not_given_has_its_default_and_a_given_one_its_value() {
        let declared = [timeout(), Setting::number("batch", 7, "How many")];
        let defaults = parse(&declared, &["annals", "serve"]).unwrap();
        assert_eq!(defaults, Settings::defaults(&declared));
        assert_eq!(
            defaults.duration("decision-timeout"),
            Ok(Duration::from_secs(30))
        );
        let given = parse(
            &declared,
            &[
                "annals",
                "command-api",
                "--decision-timeout-ms",
                "250",
                "--batch",
                "0",
            ],
        )
        .unwrap();
        assert_eq!(
            given.duration("decision-timeout"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(given.number("batch"), Ok(0));
    }

    #[test]
    fn a_bad_value_is_a_usage_error() {
        for bad in ["0", "soon", "1.5"] {
            let e = parse(
                &[timeout()],
                &["annals", "serve", "--decision-timeout-ms", bad],
            )
            .unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn asking_for_what_was_not_declared_names_it() {
        let settings = Settings::defaults(&[timeout()]);
        assert_eq!(
            settings.duration("other"),
            Err(SettingError::Undeclared("other".into()))
        );
        assert!(matches!(
            settings.number("decision-timeout"),
            Err(SettingError::OtherKind {
                declared: "duration",
                ..
            })
        ));
    }

    #[test]
    fn names_that_are_no_flag_or_taken_are_refused() {
        for name in ["", "Timeout", "two words", "-x", "a--b", "9lives"] {
            let setting = Setting::number(name, 1, "x");
            assert!(add_to(command(), &[setting]).is_err(), "{name:?}");
        }
        let taken = Setting::number("listen", 1, "x");
        let e = add_to(command(), &[taken]).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
        let twice = add_to(command(), &[timeout(), timeout()]).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
    }
}
