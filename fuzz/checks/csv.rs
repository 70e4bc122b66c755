//! The CSV cell writer (`sheet`): cells (split on 0xFF) written
//! as a record read back as the same cells — each neutralised with a
//! leading `'` exactly when it would run as a formula — and a stored raw
//! record neutralised later is byte for byte the record written escaped.

use casesync::sheet::{self, Chunk, Formulas};

fn written(cells: &[&[u8]], formulas: Formulas) -> Vec<u8> {
    let mut chunk = Chunk::new(formulas);
    chunk.record(cells.iter().copied()).expect("a record");
    chunk.bytes().expect("bytes")
}

pub fn check(data: &[u8]) {
    let cells: Vec<&[u8]> = data.split(|b| *b == 0xFF).collect();
    let escaped = written(&cells, Formulas::Escaped);
    let raw = written(&cells, Formulas::Raw);

    let mut later = Vec::new();
    sheet::push_record(&mut later, &raw[..raw.len() - 1], Formulas::Escaped);
    later.push(b'\n');
    assert_eq!(later, escaped, "a stored record neutralised later");

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(escaped.as_slice());
    let mut record = csv::ByteRecord::new();
    assert!(reader.read_byte_record(&mut record).expect("it reads"));
    assert_eq!(record.len(), cells.len(), "one field per cell");
    for (field, cell) in record.iter().zip(&cells) {
        if sheet::needs_escape(cell) {
            assert_eq!(field.first(), Some(&b'\''));
            assert_eq!(&field[1..], *cell);
        } else {
            assert_eq!(field, *cell);
        }
    }
}
