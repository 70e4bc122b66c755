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

/// What the CSV writers hand the thread that compresses.
enum Part {
    /// A new file of the archive, by name.
    File(String),
    Bytes(Vec<u8>),
}

/// Writes the archive into `sink`. Returns the form's row count.
///
/// Two stages: this thread (and `forms::write`'s second) make the CSV,
/// another compresses it at a fast level, so making and compressing go at
/// once on two cores (compression was half the time of the archive).
pub fn write(
    conn: &mut DbConnection,
    second: Option<&mut DbConnection>,
    export: &FormExport,
    sink: impl FnMut(Vec<u8>) -> bool + Send,
) -> AppResult<u64> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        // Level 1: about three times as fast as the default, the CSV's
        // repetitive columns still shrink about six times.
        .compression_level(Some(1))
        .large_file(true)
        .unix_permissions(0o600);
    std::thread::scope(|scope| {
        let (parts, received) = std::sync::mpsc::sync_channel::<Part>(16);
        let zipper = scope.spawn(move || -> AppResult<()> {
            let mut zip = ZipWriter::new_stream(SinkWriter {
                sink,
                buffer: Vec::with_capacity(CHUNK),
            });
            for part in received {
                match part {
                    Part::File(name) => zip.start_file(name, options).map_err(failed)?,
                    // The reader has gone: stop, and the senders with us.
                    Part::Bytes(bytes) => {
                        if zip.write_all(&bytes).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            zip.finish().map_err(failed)?.flush().map_err(failed)?;
            Ok(())
        });
        // False once the zipper has stopped (the reader has gone).
        let send = |part: Part| parts.send(part).is_ok();
        let made = (|| -> AppResult<u64> {
            if !send(Part::File(format!("{}.csv", export.form_id))) {
                return Ok(0);
            }
            let rows = forms::write(conn, second, export, |chunk| send(Part::Bytes(chunk)))?;
            for table in 0..export.repeats.len() {
                let name = export.repeats[table].file_name(&export.form_id);
                if !send(Part::File(name)) {
                    return Ok(rows);
                }
                forms::write_repeat(conn, export, table, |chunk| send(Part::Bytes(chunk)))?;
            }
            Ok(rows)
        })();
        drop(parts);
        let zipped = zipper
            .join()
            .map_err(|_| AppError::internal("export: the zip writer panicked"))?;
        let rows = made?;
        zipped?;
        Ok(rows)
    })
}
