//! Figures as ratios of a baseline measured in the same run: a loaded
//! machine moves both, so the ratio is the figure that holds from run to
//! run.

use std::fmt;

/// `value ÷ baseline`; not a number when the baseline is not positive (it
/// was not measured).
pub fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        f64::NAN
    }
}

/// A ratio as a multiple: `1.2×`.
pub fn times(ratio: f64, decimals: usize) -> String {
    format!("{ratio:.decimals$}×")
}

/// A ratio as a percentage: `0.853` as `85%` with no decimals.
pub fn percent(ratio: f64, decimals: usize) -> String {
    format!("{:.decimals$}%", ratio * 100.0)
}

/// What a variant costs compared with its baseline, in percent: `0.9` is a
/// cost of 10%.
pub fn cost_percent(ratio: f64) -> f64 {
    (1.0 - ratio) * 100.0
}

/// The median of `values` (the mean of the two middle ones of an even
/// count), `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    Some((sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0)
}

/// The index in `values` of their median (the lower middle one of an even
/// count), `None` for none: to pick the round whose figures are shown.
pub fn median_index(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    order.get(values.len().checked_sub(1)? / 2).copied()
}

/// The median, least and greatest of per-round ratios: how steady a
/// figure was over the rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of the finite ones of `values`, `None` for none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        Some(Spread {
            median: median(&finite)?,
            min: finite.iter().copied().fold(f64::INFINITY, f64::min),
            max: finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// `0.950 (0.930–0.970)`.
impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ({:.3}–{:.3})", self.median, self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_of_a_missing_baseline_is_not_a_number() {
        assert_eq!(ratio(10.0, 4.0), 2.5);
        assert!(ratio(10.0, 0.0).is_nan());
    }

    #[test]
    fn ratios_format_as_multiples_and_percentages() {
        assert_eq!(times(13.94, 1), "13.9×");
        assert_eq!(times(0.4312, 3), "0.431×");
        assert_eq!(percent(0.853, 0), "85%");
        assert!((cost_percent(0.9) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_index_points_at_the_lower_middle() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[0.9, 0.7, 0.8]), Some(2));
        assert_eq!(median_index(&[0.9, 0.7, 0.8, 1.0]), Some(2));
    }

    #[test]
    fn spread_ignores_what_is_not_finite() {
        let spread = Spread::of(&[0.95, f64::NAN, 0.93, 0.97]).unwrap();
        assert_eq!(
            spread,
            Spread {
                median: 0.95,
                min: 0.93,
                max: 0.97
            }
        );
        assert_eq!(spread.to_string(), "0.950 (0.930–0.970)");
        assert_eq!(Spread::of(&[f64::INFINITY]), None);
    }
}
