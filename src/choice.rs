//! Named choices: the values of options such as `--schedule` or `--units`.
//!
//! Each library enum lists its names (and a line of help) once, through
//! `named_choices!`, and then parses from and prints as those names. The
//! command line offers them to clap from that list (`choice` in the
//! binary's `app/cli.rs`), so the library needs no clap type, and a report,
//! a script and the help text spell every value the same way.

/// An enum whose values have names.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value, with its name and a line of help (empty for none).
    const ALL: &'static [(Self, &'static str, &'static str)];

    /// The value's name, as the command line spells it.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(v, _, _)| *v == self)
            .map_or("?", |(_, name, _)| name)
    }

    /// The value named `s` (exactly, as clap's default).
    fn parse(s: &str) -> Result<Self, UnknownChoice> {
        Self::ALL
            .iter()
            .find(|(_, name, _)| *name == s)
            .map(|(v, _, _)| *v)
            .ok_or_else(|| UnknownChoice {
                given: s.to_owned(),
                expected: Self::ALL
                    .iter()
                    .map(|(_, n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A name that is none of a choice's values.
#[derive(Debug, thiserror::Error)]
#[error("unknown value '{given}' (expected one of: {expected})")]
pub struct UnknownChoice {
    pub given: String,
    pub expected: String,
}

/// Implements `Choice`, `Display` and `FromStr` for an enum from its values'
/// names: `named_choices!(Units { Voxel => "voxel", Mm => "mm": "help" })`.
macro_rules! named_choices {
    ($ty:ident { $($variant:ident => $name:literal $(: $help:literal)?),+ $(,)? }) => {
        impl $crate::choice::Choice for $ty {
            const ALL: &'static [($ty, &'static str, &'static str)] =
                &[$(($ty::$variant, $name, $crate::choice::named_choices!(@help $($help)?))),+];
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }
        impl std::str::FromStr for $ty {
            type Err = $crate::choice::UnknownChoice;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::choice::Choice::parse(s)
            }
        }
    };
    (@help) => { "" };
    (@help $help:literal) => { $help };
}
pub(crate) use named_choices;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Copy, Clone, Debug, PartialEq)]
    enum Fruit {
        Apple,
        Pear,
    }
    named_choices!(Fruit { Apple => "apple": "red", Pear => "pear" });

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        assert_eq!("pear".parse::<Fruit>().unwrap(), Fruit::Pear);
        assert_eq!(Fruit::Apple.to_string(), "apple");
        assert_eq!(Fruit::ALL[0].2, "red");
        let e = "Pear".parse::<Fruit>().unwrap_err().to_string();
        assert_eq!(e, "unknown value 'Pear' (expected one of: apple, pear)");
    }
}
