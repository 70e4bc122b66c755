//! Small-count suppression for publishable reports: a cell with a count
//! from 1 to the threshold − 1 is hidden (primary), and then enough other
//! cells (secondary) that no hidden one can be recovered by subtracting the
//! shown cells of a line from its total.

use std::collections::HashMap;

use super::{Row, Suppression, TOTAL};

/// Marks `rows` (sorted by item and period; `dims` breakdown values each).
pub(super) fn suppress(rows: &mut [Row], dims: usize, threshold: u64) {
    for row in rows.iter_mut() {
        if row.counts().any(|c| c > 0 && c < threshold) {
            row.suppression = Some(Suppression::Primary);
        }
    }
    if dims == 0 {
        return;
    }
    let mut start = 0;
    while start < rows.len() {
        let key = (rows[start].item, rows[start].period);
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| (r.item, r.period) == key)
                .count();
        protect(&mut rows[start..end], dims);
        start = end;
    }
}

/// Secondary suppression within one table (one item and period).
fn protect(table: &mut [Row], dims: usize) {
    loop {
        let mut changed = false;
        for d in 0..dims {
            // A line: the cells that differ only in breakdown `d`, with
            // their total for `d`.
            let mut lines: HashMap<Vec<&str>, Vec<usize>> = HashMap::new();
            for (i, row) in table.iter().enumerate() {
                let mut key: Vec<&str> = row.values.iter().map(String::as_str).collect();
                key.remove(d);
                lines.entry(key).or_default().push(i);
            }
            let mut hide = Vec::new();
            for members in lines.values() {
                let hidden = members
                    .iter()
                    .filter(|&&i| table[i].suppression.is_some())
                    .count();
                if hidden != 1 {
                    continue;
                }
                let shown = |i: &&usize| table[**i].suppression.is_none() && table[**i].cases > 0;
                let is_total = |i: usize| table[i].values[d] == TOTAL;
                let pick = members
                    .iter()
                    .filter(shown)
                    .filter(|&&i| !is_total(i))
                    .min_by_key(|&&i| (table[i].cases, i))
                    .or_else(|| members.iter().filter(shown).find(|&&i| is_total(i)));
                if let Some(&i) = pick {
                    hide.push(i);
                }
            }
            for i in hide {
                if table[i].suppression.is_none() {
                    table[i].suppression = Some(Suppression::Secondary);
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[&str], cases: u64) -> Row {
        Row {
            item: 0,
            period: 0,
            values: values.iter().map(|v| v.to_string()).collect(),
            cases,
            children: cases,
            numerator: None,
            denominator: None,
            median_delay_hours: None,
            median_delay_days: None,
            suppression: None,
        }
    }

    fn marks(rows: &[Row]) -> Vec<(String, Option<Suppression>)> {
        rows.iter()
            .map(|r| (r.values.join("/"), r.suppression))
            .collect()
    }

    #[test]
    fn one_small_cell_takes_the_next_smallest_of_its_line_with_it() {
        let mut rows = vec![
            row(&["total"], 20),
            row(&["female"], 3),
            row(&["male"], 9),
            row(&["unknown"], 8),
        ];
        suppress(&mut rows, 1, 5);
        assert_eq!(
            marks(&rows),
            vec![
                ("total".into(), None),
                ("female".into(), Some(Suppression::Primary)),
                ("male".into(), None),
                ("unknown".into(), Some(Suppression::Secondary)),
            ]
        );
    }

    #[test]
    fn a_cell_alone_in_its_line_hides_the_total_and_crossing_lines_are_protected() {
        // sex × age band: female/0-2 is 2 (primary); its sex line has only
        // it besides the female total, which must go too; then the total
        // line of sexes has female hidden only and hides male's total…
        let mut rows = vec![
            row(&["total", "total"], 30),
            row(&["total", "0-2"], 12),
            row(&["total", "3-5"], 18),
            row(&["female", "total"], 2),
            row(&["female", "0-2"], 2),
            row(&["male", "total"], 28),
            row(&["male", "0-2"], 10),
            row(&["male", "3-5"], 18),
        ];
        suppress(&mut rows, 2, 5);
        let hidden: Vec<String> = rows
            .iter()
            .filter(|r| r.suppression.is_some())
            .map(|r| r.values.join("/"))
            .collect();
        assert!(hidden.contains(&"female/0-2".to_string()));
        assert!(hidden.contains(&"female/total".to_string()));
        // No line of the table has exactly one hidden entry.
        for d in 0..2 {
            let mut lines: HashMap<String, usize> = HashMap::new();
            for r in &rows {
                let mut key = r.values.clone();
                key.remove(d);
                *lines.entry(key.join("/")).or_default() += usize::from(r.suppression.is_some());
            }
            assert!(lines.values().all(|&n| n != 1), "{lines:?} along {d}");
        }
    }

    #[test]
    fn zero_is_shown_and_large_tables_stay_untouched() {
        let mut rows = vec![row(&["total"], 0)];
        suppress(&mut rows, 1, 5);
        assert_eq!(rows[0].suppression, None);
        let mut rows = vec![row(&["total"], 12), row(&["a"], 5), row(&["b"], 7)];
        suppress(&mut rows, 1, 5);
        assert!(rows.iter().all(|r| r.suppression.is_none()));
    }
}
