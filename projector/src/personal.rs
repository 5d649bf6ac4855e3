//! Personal data in views: the one place that decides how a customer's name
//! and email are stored and searched.
//!
//! Personal fields reach the projector decrypted by the store's shredding
//! layer, or as [`ERASED`] once their subject was forgotten (a rebuild after
//! an erasure therefore brings no personal data back). The erased form is
//! produced here and nowhere else, so that no view keeps a searchable copy
//! an erasure missed.

/// What a view shows in place of erased personal data: the marker the
/// store's shredding layer reads erased fields as.
pub const ERASED: &str = event_store::ERASED;

/// A customer's personal data as a view stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalData {
    pub name: String,
    /// The name as searched: lowercased, so that a prefix search ignores case.
    pub name_folded: String,
    pub email: String,
}

impl PersonalData {
    pub fn new(name: &str, email: &str) -> Self {
        Self {
            name: name.to_owned(),
            // An erased name must not be found by a search for "[er".
            name_folded: if name == ERASED {
                String::new()
            } else {
                fold(name)
            },
            email: email.to_owned(),
        }
    }

    /// The stand-in for erased data: it matches no name search.
    pub fn erased() -> Self {
        Self {
            name: ERASED.to_owned(),
            name_folded: String::new(),
            email: ERASED.to_owned(),
        }
    }
}

/// The searchable form of a name or of a name prefix.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_lowercase_for_search() {
        assert_eq!(
            PersonalData::new("Zoë Ångström", "z@x").name_folded,
            "zoë ångström"
        );
        assert_eq!(fold("ÅNG"), "ång");
        assert!(PersonalData::erased().name_folded.is_empty());
        assert_eq!(PersonalData::new(ERASED, ERASED), PersonalData::erased());
    }
}
