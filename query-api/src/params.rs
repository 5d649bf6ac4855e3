//! Query-string parameters: parsed strictly (an unknown or repeated
//! parameter is an error, not ignored) and checked against their limits.

use projector::http::{Problem, problem_type};

/// The longest query string accepted, in bytes.
pub const QUERY_BYTES_MAX: usize = 4_096;

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `raw`, accepting only the names in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, Problem> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        if raw.len() > QUERY_BYTES_MAX {
            return Err(invalid_request(format!(
                "the query string is {} bytes; at most {QUERY_BYTES_MAX} are accepted",
                raw.len()
            )));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| invalid_request(format!("the query string does not parse: {e}")))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(invalid_request(format!(
                    "unknown parameter {name:?}; this resource accepts {}",
                    allowed.join(", ")
                ))
                .with("parameter", name.as_str()));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(
                    invalid_request(format!("parameter {name:?} is given more than once"))
                        .with("parameter", name.as_str()),
                );
            }
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`.
    pub fn integer(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, Problem> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let bad = || {
            invalid_request(format!(
                "{name} must be an integer from {min} to {max}, not {raw:?}"
            ))
            .with("parameter", name)
        };
        let value: i64 = raw.parse().map_err(|_| bad())?;
        if value < min || value > max {
            return Err(bad());
        }
        Ok(Some(value))
    }

    /// A text parameter of 1 to `chars_max` characters.
    pub fn text(&self, name: &str, chars_max: usize) -> Result<Option<&str>, Problem> {
        self.get(name)
            .map(|value| text_value(name, value, chars_max))
            .transpose()
    }
}

/// A text of 1 to `chars_max` characters, given as `name`.
pub fn text_value<'a>(name: &str, value: &'a str, chars_max: usize) -> Result<&'a str, Problem> {
    let chars = value.chars().count();
    if chars == 0 || chars > chars_max {
        return Err(invalid_request(format!(
            "{name} must have 1 to {chars_max} characters, not {chars}"
        ))
        .with("parameter", name));
    }
    Ok(value)
}

/// `400 invalid-request`: a parameter, cursor or header that can never be
/// answered as sent.
pub fn invalid_request(detail: impl Into<String>) -> Problem {
    Problem::bad_request(problem_type::INVALID_REQUEST, detail)
}

/// An id taken from a path or a filter, in its one spelling (see
/// [`http_edge::ids`]): anything else is the `invalid-id` problem the
/// command API sends for the same text, never a `404` or an empty page.
/// `name` is the parameter, as the command API names it.
pub fn id(name: &str, raw: &str) -> Result<String, Problem> {
    match http_edge::ids::parse_id(raw) {
        Ok(id) => Ok(id.to_string()),
        Err(e) => Err(Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            problem_type::INVALID_ID,
            "Invalid id",
            e.to_string(),
        )
        .with("parameter", name)),
    }
}

/// A path whose id did not even decode (bad percent-encoding, say): the
/// same `invalid-id` problem as the command API's.
pub fn path_rejection(rejection: axum::extract::rejection::PathRejection) -> Problem {
    Problem::new(
        axum::http::StatusCode::BAD_REQUEST,
        problem_type::INVALID_ID,
        "Invalid id",
        format!("invalid path: {rejection}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_repeated_and_oversized_parameters_are_refused() {
        assert!(Params::parse(Some("a=1&b=2"), &["a", "b"]).is_ok());
        assert!(Params::parse(None, &["a"]).unwrap().get("a").is_none());
        assert!(Params::parse(Some("c=1"), &["a"]).is_err());
        assert!(Params::parse(Some("a=1&a=2"), &["a"]).is_err());
        let long = format!("a={}", "x".repeat(QUERY_BYTES_MAX));
        assert!(Params::parse(Some(&long), &["a"]).is_err());
    }

    #[test]
    fn integers_are_checked_on_both_sides() {
        let p = Params::parse(
            Some("n=0&m=11&k=x&big=99999999999999999999"),
            &["n", "m", "k", "big"],
        )
        .unwrap();
        assert_eq!(p.integer("n", 0, 10).unwrap(), Some(0));
        assert!(p.integer("n", 1, 10).is_err());
        assert!(p.integer("m", 0, 10).is_err());
        assert_eq!(p.integer("m", 0, 11).unwrap(), Some(11));
        assert!(p.integer("k", 0, 10).is_err());
        assert!(p.integer("big", 0, i64::MAX).is_err());
        assert_eq!(p.integer("absent", 0, 1).unwrap(), None);
    }

    #[test]
    fn text_is_decoded_and_bounded_in_characters() {
        let p = Params::parse(Some("t=%C3%A5%C3%A5&e="), &["t", "e"]).unwrap();
        assert_eq!(p.text("t", 2).unwrap(), Some("åå"));
        assert!(p.text("t", 1).is_err());
        assert!(p.text("e", 5).is_err());
    }
}
