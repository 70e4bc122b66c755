//! The `.zip` form export: the form's CSV and one CSV per repeat group,
//! joined by PARENT_KEY and KEY as in ODK Central's export. Written as it
//! goes (a streamed archive needs no seeking), so memory stays flat too.

use std::io::Write;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::forms::{self, FormExport};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};

/// Bytes gathered before a chunk goes to the sink.
const CHUNK: usize = 64 * 1024;

/// Hands what is written to `sink` in chunks; fails once the sink says
/// the reader has gone.
struct SinkWriter<F: FnMut(Vec<u8>) -> bool> {
    sink: F,
    buffer: Vec<u8>,
}

impl<F: FnMut(Vec<u8>) -> bool> Write for SinkWriter<F> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        if (self.sink)(chunk) {
            Ok(())
        } else {
            Err(std::io::Error::other("the reader has gone"))
        }
    }
}

fn failed(e: impl std::fmt::Display) -> AppError {
    AppError::internal(format!("zip: {e}"))
}

/// Writes the archive into `sink`. Returns the form's row count.
pub fn write(
    conn: &mut DbConnection,
    second: Option<&mut DbConnection>,
    export: &FormExport,
    sink: impl FnMut(Vec<u8>) -> bool + Send,
) -> AppResult<u64> {
    let mut zip = ZipWriter::new_stream(SinkWriter {
        sink,
        buffer: Vec::with_capacity(CHUNK),
    });
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .large_file(true)
        .unix_permissions(0o600);
    let mut gone = false;
    zip.start_file(format!("{}.csv", export.form_id), options)
        .map_err(failed)?;
    let rows = forms::write(conn, second, export, |chunk| {
        gone = zip.write_all(&chunk).is_err();
        !gone
    })?;
    for table in 0..export.repeats.len() {
        if gone {
            return Ok(rows);
        }
        let name = export.repeats[table].file_name(&export.form_id);
        zip.start_file(name, options).map_err(failed)?;
        forms::write_repeat(conn, export, table, |chunk| {
            gone = zip.write_all(&chunk).is_err();
            !gone
        })?;
    }
    if !gone {
        zip.finish().map_err(failed)?.flush().map_err(failed)?;
    }
    Ok(rows)
}
