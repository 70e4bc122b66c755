//! Asking the person at the collector for a new password: twice and
//! without echo at a terminal; one line per attempt from standard input
//! when it is not a terminal (scripts and tests, `--new-password-stdin`).

use std::io::{BufRead, IsTerminal};

use super::CollectResult;

/// Where new passwords come from.
pub enum NewPasswordSource {
    Terminal,
    Stdin,
    /// Neither: say how to give one.
    Unavailable,
}

impl NewPasswordSource {
    /// The terminal when there is one, else standard input if allowed.
    pub fn pick(stdin_allowed: bool) -> NewPasswordSource {
        if std::io::stdin().is_terminal() {
            NewPasswordSource::Terminal
        } else if stdin_allowed {
            NewPasswordSource::Stdin
        } else {
            NewPasswordSource::Unavailable
        }
    }

    /// One new password; `refused` is the server's reason for the last one.
    pub fn ask(&self, refused: Option<&str>) -> CollectResult<String> {
        match self {
            NewPasswordSource::Unavailable => Err(
                "this account has a one-time password that must be changed first: run this \
                 command in a terminal to choose a new one, or add --new-password-stdin and give \
                 it on standard input"
                    .into(),
            ),
            NewPasswordSource::Stdin => {
                if let Some(why) = refused {
                    eprintln!("the server refused that password: {why}");
                }
                let mut line = String::new();
                let read = std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| format!("standard input: {e}"))?;
                let password = line.trim_end_matches(['\r', '\n']).to_string();
                if read == 0 || password.is_empty() {
                    return Err(match refused {
                        Some(why) => format!("the new password was refused ({why}) and standard input has no other"),
                        None => "this account has a one-time password: give the new password on standard input".into(),
                    });
                }
                Ok(password)
            }
            NewPasswordSource::Terminal => {
                let term = console::Term::stderr();
                let say = |text: &str| term.write_str(text).map_err(|e| e.to_string());
                match refused {
                    Some(why) => say(&format!("The server refused that password: {why}\n"))?,
                    None => say("This account has a one-time password: choose your own now.\n")?,
                }
                loop {
                    say("New password: ")?;
                    let first = term.read_secure_line().map_err(|e| e.to_string())?;
                    if first.is_empty() {
                        continue;
                    }
                    say("The same again: ")?;
                    let second = term.read_secure_line().map_err(|e| e.to_string())?;
                    if first == second {
                        return Ok(first);
                    }
                    say("The two entries differ; try again.\n")?;
                }
            }
        }
    }
}
