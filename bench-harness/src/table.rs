//! Markdown tables with aligned columns: readable in a terminal as they
//! are, and pasted into docs/benchmarks.md as they are.

use std::fmt;

/// Where a column's cells sit: text left, figures right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// The narrowest a column is drawn, so that its delimiter cell always
/// holds a dash besides the alignment colon.
const MIN_WIDTH: usize = 3;

/// A table built row by row and printed whole, its columns as wide as
/// their widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// Adds a left-aligned column.
    pub fn left(self, header: &str) -> Table {
        self.column(header, Align::Left)
    }

    /// Adds a right-aligned column.
    pub fn right(self, header: &str) -> Table {
        self.column(header, Align::Right)
    }

    pub fn column(mut self, header: &str, align: Align) -> Table {
        self.columns.push((header.to_owned(), align));
        self
    }

    /// Adds a row: one cell per column, missing ones empty.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Prints the table to standard output.
    pub fn print(&self) {
        print!("{self}");
    }

    /// The number of columns: the headers', or more if a row has more cells.
    fn width(&self) -> usize {
        self.rows
            .iter()
            .map(Vec::len)
            .chain([self.columns.len()])
            .max()
            .unwrap_or(0)
    }

    fn align(&self, column: usize) -> Align {
        self.columns.get(column).map_or(Align::Left, |(_, a)| *a)
    }

    fn header(&self, column: usize) -> &str {
        self.columns.get(column).map_or("", |(h, _)| h.as_str())
    }

    /// Each column's width in characters.
    fn widths(&self) -> Vec<usize> {
        (0..self.width())
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(String::as_str)
                    .chain([self.header(c)])
                    .map(|cell| cell.chars().count())
                    .fold(MIN_WIDTH, usize::max)
            })
            .collect()
    }
}

/// `| a | b |` with every cell padded to its column's width.
fn line<'a>(
    f: &mut fmt::Formatter<'_>,
    cells: impl Iterator<Item = (&'a str, usize, Align)>,
) -> fmt::Result {
    for (cell, width, align) in cells {
        match align {
            Align::Left => write!(f, "| {cell:<width$} ")?,
            Align::Right => write!(f, "| {cell:>width$} ")?,
        }
    }
    writeln!(f, "|")
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        let aligns: Vec<Align> = (0..widths.len()).map(|c| self.align(c)).collect();
        let headers = (0..widths.len()).map(|c| self.header(c));
        line(
            f,
            headers
                .zip(widths.iter().copied())
                .zip(aligns.iter().copied())
                .map(|((h, w), a)| (h, w, a)),
        )?;
        for (width, align) in widths.iter().zip(&aligns) {
            match align {
                Align::Left => write!(f, "|-{}-", "-".repeat(*width))?,
                Align::Right => write!(f, "|-{}:", "-".repeat(*width))?,
            }
        }
        writeln!(f, "|")?;
        for row in &self.rows {
            let cells = (0..widths.len()).map(|c| row.get(c).map_or("", String::as_str));
            line(
                f,
                cells
                    .zip(widths.iter().copied())
                    .zip(aligns.iter().copied())
                    .map(|((cell, w), a)| (cell, w, a)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_their_widest_cell() {
        let mut table = Table::new().left("stream").right("p50 ms");
        table.row(["customer-small", "0.042"]);
        table.row(["customer-large", "12.264"]);
        assert_eq!(
            table.to_string(),
            "\
| stream         | p50 ms |
|----------------|-------:|
| customer-small |  0.042 |
| customer-large | 12.264 |
"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut table = Table::new().left("store").right("µs");
        table.row(["plain", "1.5×"]);
        assert_eq!(
            table.to_string(),
            "\
| store |   µs |
|-------|-----:|
| plain | 1.5× |
"
        );
    }

    #[test]
    fn short_rows_get_empty_cells_and_narrow_columns_three_dashes() {
        let mut table = Table::new().right("n").left("name");
        table.row(["1"]);
        assert_eq!(
            table.to_string(),
            "\
|   n | name |
|----:|------|
|   1 |      |
"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let table = Table::new().left("a");
        assert!(table.is_empty());
        assert_eq!(table.to_string(), "| a   |\n|-----|\n");
    }
}
