//! CSV cells as a spreadsheet will read them: every CSV the server and the
//! CLI write goes through [`push_cell`], so the quoting (RFC 4180, as the
//! csv crate quotes) and the neutralising of formulas are one rule in one
//! place.
//!
//! Formula injection (OWASP, "CSV Injection"): Excel, LibreOffice and
//! Google Sheets run a cell that starts with `=`, `+`, `-`, `@`, a TAB or a
//! CR as a formula, so `=HYPERLINK(…)` typed into a form would reach a
//! coordinator's spreadsheet live. Such a cell is written with a single
//! quote before it (the spreadsheet's "this is text" mark) and always in
//! double quotes. A cell that is entirely a number (`-3`, `+7`, `-0.5`,
//! `1e-3`) is left as it is: a number runs nothing, and a negative count or
//! score stays a number in the sheet. NUL and LF, and the full-width forms
//! of the four signs (which some locales' spreadsheets take for them), are
//! treated the same way.
//!
//! Answers are stored at ingest unescaped (`submissions::cells`): the rule is
//! applied as a file is written, so records stored before it are covered
//! and `formula_escape=false` can give scripts the values as they are.

use crate::error::AppResult;

/// Whether cells a spreadsheet would run as formulas are neutralised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Formulas {
    /// The default: a leading `'`, and quoted.
    #[default]
    Escaped,
    /// `formula_escape=false`: values as they are, for scripts (recorded
    /// on the export's audit row).
    Raw,
}

impl Formulas {
    /// From an export's `formula_escape` parameter (absent: escaped).
    pub fn from_param(formula_escape: Option<bool>) -> Formulas {
        match formula_escape {
            Some(false) => Formulas::Raw,
            _ => Formulas::Escaped,
        }
    }

    /// What the audit row and disclosure log add: nothing when escaped.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Formulas::Escaped => None,
            Formulas::Raw => Some("formulas not escaped (formula_escape=false)"),
        }
    }
}

/// Whether a cell's text starts as a spreadsheet formula would.
fn starts_like_a_formula(cell: &[u8]) -> bool {
    match cell {
        [b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\n' | 0, ..] => true,
        // Full-width ＝ ＋ － ＠ (U+FF1D, U+FF0B, U+FF0D, U+FF20).
        [0xEF, 0xBC, 0x9D | 0x8B | 0x8D | 0xA0, ..] => true,
        _ => false,
    }
}

/// Whether `cell` is entirely a decimal number: an optional sign, digits
/// with at most one point, an optional exponent.
fn is_number(cell: &[u8]) -> bool {
    let mut rest = match cell {
        [b'+' | b'-', rest @ ..] => rest,
        _ => cell,
    };
    let mut digits = 0;
    let mut point = false;
    while let [b, tail @ ..] = rest {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' if !point => point = true,
            _ => break,
        }
        rest = tail;
    }
    if digits == 0 {
        return false;
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        let tail = match tail {
            [b'+' | b'-', t @ ..] => t,
            t => t,
        };
        return !tail.is_empty() && tail.iter().all(u8::is_ascii_digit);
    }
    rest.is_empty()
}

/// Whether `cell` would be neutralised when written with `Escaped`.
pub fn needs_escape(cell: &[u8]) -> bool {
    starts_like_a_formula(cell) && !is_number(cell)
}

/// Appends one cell to a record written by hand: quoted as the csv crate
/// quotes (only when it holds a comma, a quote or a line break), and, with
/// `Formulas::Escaped`, neutralised when a spreadsheet would run it.
pub fn push_cell(out: &mut Vec<u8>, cell: &[u8], formulas: Formulas) {
    let escape = formulas == Formulas::Escaped && needs_escape(cell);
    if escape
        || cell
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push(b'"');
        if escape {
            out.push(b'\'');
        }
        for &b in cell {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(cell);
    }
}

/// Appends a record stored by [`push_cell`] with `Formulas::Raw` (the
/// `submission_cells` records) as `formulas` asks: copied whole unless a
/// cell needs neutralising. One pass, no allocation: a cell can only start
/// at the record's start or after a comma, so a record where no such place
/// looks like a formula is copied at once; otherwise it is walked cell by
/// cell.
pub fn push_record(out: &mut Vec<u8>, record: &[u8], formulas: Formulas) {
    if formulas == Formulas::Raw || !may_hold_a_formula(record) {
        out.extend_from_slice(record);
        return;
    }
    let mut at = 0;
    loop {
        let rest = &record[at..];
        // The cell's extent and its content (unquoted; quotes inside it
        // still doubled, which is how they are written again).
        let (len, content) = if rest.first() == Some(&b'"') {
            let mut i = 1;
            while i < rest.len() {
                if rest[i] == b'"' {
                    if rest.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            let end = (i + 1).min(rest.len());
            (end, &rest[1..i.min(rest.len())])
        } else {
            let len = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            (len, &rest[..len])
        };
        // Quotes inside `content` are doubled, which cannot change how it
        // starts unless it starts with one (never a formula).
        if needs_escape(content) {
            out.extend_from_slice(b"\"'");
            out.extend_from_slice(content);
            out.push(b'"');
        } else {
            out.extend_from_slice(&rest[..len]);
        }
        at += len;
        if at >= record.len() {
            break;
        }
        // The comma after the cell.
        out.push(record[at]);
        at += 1;
        if at == record.len() {
            break;
        }
    }
}

/// Bytes a formula-looking cell can start with (the lead byte of the
/// full-width signs included); the careful walk decides.
const LEADS: [bool; 256] = {
    let mut leads = [false; 256];
    let mut i = 0;
    let bytes = [b'=', b'+', b'-', b'@', b'\t', b'\r', b'\n', 0, 0xEF];
    while i < bytes.len() {
        leads[bytes[i] as usize] = true;
        i += 1;
    }
    leads
};

/// Whether any place a cell could start (the record's start, after a
/// comma, after a quote opening a cell) holds what looks like a formula:
/// one tight pass, most records answer no.
fn may_hold_a_formula(record: &[u8]) -> bool {
    let mut cell_start = true;
    let mut quote_opened = false;
    for &b in record {
        if (cell_start || quote_opened) && LEADS[usize::from(b)] {
            return true;
        }
        quote_opened = cell_start && b == b'"';
        cell_start = b == b',';
    }
    false
}

/// Records written by hand into memory, each ended by `\n` (as the csv
/// crate ends them), handed on whole as a page of the file.
pub struct Chunk {
    out: Vec<u8>,
    formulas: Formulas,
}

impl Chunk {
    pub fn new(formulas: Formulas) -> Chunk {
        Chunk::with_capacity(64 * 1024, formulas)
    }

    pub fn with_capacity(bytes: usize, formulas: Formulas) -> Chunk {
        Chunk {
            out: Vec::with_capacity(bytes),
            formulas,
        }
    }

    /// Appends one record.
    pub fn record<I, T>(&mut self, cells: I) -> AppResult<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let start = self.out.len();
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            push_cell(&mut self.out, cell.as_ref(), self.formulas);
        }
        if self.out.len() == start {
            // One empty cell: quoted, so the line is not read as blank.
            self.out.extend_from_slice(b"\"\"");
        }
        self.out.push(b'\n');
        Ok(())
    }

    pub fn bytes(self) -> AppResult<Vec<u8>> {
        Ok(self.out)
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str, formulas: Formulas) -> String {
        let mut out = Vec::new();
        push_cell(&mut out, text.as_bytes(), formulas);
        String::from_utf8(out).unwrap()
    }

    /// What a spreadsheet would run is written after a `'`, quoted; what
    /// it would not, as the csv crate writes it.
    #[test]
    fn formulas_are_neutralised_and_numbers_are_not() {
        let escaped = [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
            ),
            ("=1+1", "\"'=1+1\""),
            ("+7 701 123 4567", "\"'+7 701 123 4567\""),
            ("-3+cmd|' /C calc'!A0", "\"'-3+cmd|' /C calc'!A0\""),
            ("@SUM(A1:A9)", "\"'@SUM(A1:A9)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
            ("\n=1", "\"'\n=1\""),
            ("-", "\"'-\""),
            ("+1-2", "\"'+1-2\""),
            ("－1+1", "\"'－1+1\""),
            ("＝1+1", "\"'＝1+1\""),
        ];
        for (text, written) in escaped {
            assert_eq!(cell(text, Formulas::Escaped), written, "{text:?}");
            assert!(needs_escape(text.as_bytes()), "{text:?}");
        }
        // Entirely numbers: unchanged (the decision in docs/api.md).
        for number in ["-3", "+7", "-0.5", "+1.25e-3", "-12E4", "-.5", "0"] {
            assert_eq!(cell(number, Formulas::Escaped), number, "{number:?}");
            assert!(!needs_escape(number.as_bytes()), "{number:?}");
        }
        // Ordinary text, a date and an empty cell.
        for text in ["Timur", "2026-03-02", "", "a - b", "e-mail"] {
            assert_eq!(cell(text, Formulas::Escaped), text);
        }
        // Not numbers, though they start with a sign.
        for text in ["-3 apples", "-1e", "+", "-1.2.3", "--1"] {
            assert!(needs_escape(text.as_bytes()), "{text:?}");
        }
        // Raw: as the csv crate writes it.
        assert_eq!(cell("=1+1", Formulas::Raw), "=1+1");
        assert_eq!(cell("=a,b", Formulas::Raw), "\"=a,b\"");
    }

    /// An escaped file reads back with the `'` before the formula and
    /// nothing else changed.
    #[test]
    fn escaped_records_read_back_as_text() {
        let cells = ["=cmd|' /C calc'!A0", "x,\"y\"", "-3", "@a", "", "\"=q\""];
        let mut chunk = Chunk::new(Formulas::Escaped);
        chunk.record(cells).unwrap();
        let bytes = chunk.bytes().unwrap();
        let read: Vec<String> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice())
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(String::from)
            .collect();
        assert_eq!(
            read,
            ["'=cmd|' /C calc'!A0", "x,\"y\"", "-3", "'@a", "", "\"=q\""]
        );
    }

    /// A stored record neutralised whole gives what writing each of its
    /// cells escaped gives.
    #[test]
    fn stored_records_are_neutralised_as_their_cells_would_be() {
        let records: [&[&str]; 7] = [
            &["plain", "2026-03", "-3", "x"],
            &["=1+1", "a", "@b"],
            &["a,=b", "=c,d", "\"=e\"", "say \"=no\""],
            &["", "", "=z"],
            &["-", ""],
            &["x\n=y", "\t1", "+7"],
            &[""],
        ];
        for cells in records {
            let mut stored = Vec::new();
            let mut escaped = Vec::new();
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    stored.push(b',');
                    escaped.push(b',');
                }
                push_cell(&mut stored, c.as_bytes(), Formulas::Raw);
                push_cell(&mut escaped, c.as_bytes(), Formulas::Escaped);
            }
            let mut out = Vec::new();
            push_record(&mut out, &stored, Formulas::Escaped);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(escaped).unwrap(),
                "{cells:?}"
            );
            let mut raw = Vec::new();
            push_record(&mut raw, &stored, Formulas::Raw);
            assert_eq!(raw, stored);
        }
    }

    /// Written by hand, exactly as the csv crate writes (RFC 4180), when
    /// nothing needs neutralising.
    #[test]
    fn records_are_what_the_csv_crate_writes() {
        let records: [&[&str]; 4] = [
            &[
                "plain",
                "",
                "a, b",
                "say \"no\"",
                "two\nlines",
                "cr\rhere",
                "\"",
                "Әлия",
                " s ",
            ],
            &[""],
            &["", ""],
            &["-3", "+7", "1e5"],
        ];
        for cells in records {
            let mut chunk = Chunk::new(Formulas::Escaped);
            chunk.record(cells).unwrap();
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(cells).unwrap();
            assert_eq!(
                String::from_utf8(chunk.bytes().unwrap()).unwrap(),
                String::from_utf8(writer.into_inner().unwrap()).unwrap(),
                "{cells:?}"
            );
        }
    }
}
