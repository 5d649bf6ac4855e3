//! The event payload the store benchmarks append.

/// 200 bytes of JSON, numbered `n`: what a small business event weighs.
pub fn json_200(n: u64) -> String {
    let head = format!(
        r#"{{"customer_id":"c-{n:08}","amount":{},"currency":"EUR","note":""#,
        n % 10_000
    );
    let pad = 200 - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_200_bytes_of_json() {
        for n in [0, 7, 99_999_999] {
            let p = json_200(n);
            assert_eq!(p.len(), 200, "{p}");
            serde_json::from_str::<serde_json::Value>(&p).unwrap();
        }
    }
}
