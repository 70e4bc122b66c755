//! The console's journeys in a real, headless Chromium (Debian's
//! `chromium` and `chromium-driver`), driven over WebDriver with a fresh
//! profile: what a coordinator and an admin do with a mouse and keyboard,
//! against a real server with real submissions. Each page is saved as a
//! screenshot at 1280×800 and 800×1280 under `target/tmp/screenshots/`
//! (not committed) to be looked at.
//!
//! `.ci/run` installs both and sets CASESYNC_TEST_REQUIRE_BROWSER=1, so CI
//! fails without them; elsewhere the journeys say they were skipped.
//! (The console's rules over plain HTTP are tests/it/console.rs.)

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::build;
use common::phone::phone;
use common::{TestApp, USER_PASSWORD};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium and its driver, gone when dropped.
pub(crate) struct Browser {
    pub(crate) runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where the browser saves downloads (`downloads`).
    downloads: tempfile::TempDir,
    base: String,
}

fn required() -> bool {
    std::env::var("CASESYNC_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Chromium on `app`, or `None` (after saying why) where it is not
    /// installed and not required.
    pub(crate) fn open(app: &TestApp) -> Option<Browser> {
        let chromium = std::env::var("CASESYNC_TEST_CHROMIUM").unwrap_or(CHROMIUM.into());
        let driver = std::env::var("CASESYNC_TEST_CHROMEDRIVER").unwrap_or(CHROMEDRIVER.into());
        for tool in [&chromium, &driver] {
            if !PathBuf::from(tool).exists() {
                if required() {
                    panic!("CASESYNC_TEST_REQUIRE_BROWSER=1 but {tool} is not installed");
                }
                eprintln!("SKIPPED: {tool} is not installed (.ci/run installs chromium and chromium-driver)");
                return None;
            }
        }
        let port = free_port();
        let driver = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut options = Map::new();
        options.insert("binary".into(), json!(chromium));
        options.insert(
            "args".into(),
            json!([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.path().display()),
            ]),
        );
        // Downloads go, without asking, to a directory of this browser's.
        let downloads = tempfile::tempdir().unwrap();
        options.insert(
            "prefs".into(),
            json!({
                "download.default_directory": downloads.path().display().to_string(),
                "download.prompt_for_download": false,
                "download.directory_upgrade": true,
                "safebrowsing.enabled": false,
            }),
        );
        let mut capabilities = Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!(options));
        let client = runtime.block_on(async {
            let started = Instant::now();
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                {
                    Ok(client) => break client,
                    Err(e) if started.elapsed() < Duration::from_secs(30) => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("Chromium did not start under chromedriver: {e}"),
                }
            }
        });
        Some(Browser {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
            downloads,
            base: app.url(""),
        })
    }

    pub(crate) fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub(crate) fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        self.runtime.block_on(self.client().goto(&url)).unwrap();
    }

    pub(crate) fn path(&self) -> String {
        let url = self.runtime.block_on(self.client().current_url()).unwrap();
        url.path().to_string()
    }

    /// Waits (a few seconds at most) for the browser to be at `path`
    /// after a click, then says where it is.
    pub(crate) fn arrives_at(&self, path: &str) -> String {
        let started = Instant::now();
        loop {
            let now = self.path();
            if now == path || started.elapsed() > Duration::from_secs(5) {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn source(&self) -> String {
        self.runtime.block_on(self.client().source()).unwrap()
    }

    pub(crate) fn fill(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let field = self.client().find(Locator::Css(css)).await.unwrap();
            field.clear().await.unwrap();
            field.send_keys(text).await.unwrap();
        });
    }

    pub(crate) fn click(&self, css: &str) {
        self.runtime.block_on(async {
            self.client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .click()
                .await
                .unwrap();
        });
    }

    /// Clicks what submits a form and waits (a few seconds at most) for the
    /// next page to replace this one: for a form that comes back to the
    /// same path, where [`Browser::arrives_at`] cannot tell the pages apart.
    pub(crate) fn submit(&self, css: &str) {
        self.runtime.block_on(async {
            let page = self.client().find(Locator::Css("html")).await.unwrap();
            self.client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .click()
                .await
                .unwrap();
            let started = Instant::now();
            // The old page's root goes stale once the new one is loaded.
            while page.tag_name().await.is_ok() && started.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// The text of the first element `css` matches, waiting a little for
    /// a page still loading.
    pub(crate) fn text(&self, css: &str) -> String {
        self.runtime.block_on(async {
            let started = Instant::now();
            loop {
                let found = self
                    .client()
                    .wait()
                    .at_most(Duration::from_secs(5))
                    .for_element(Locator::Css(css))
                    .await;
                let element = match found {
                    Ok(element) => element,
                    Err(e) => panic!(
                        "no {css} on {}: {e}\n{}",
                        self.client().current_url().await.unwrap(),
                        self.client().source().await.unwrap_or_default()
                    ),
                };
                match element.text().await {
                    Ok(text) => return text,
                    // Found on a page that a newer one (a redirect, a
                    // form's answer) replaced before it was read: find it
                    // again on the page now shown.
                    Err(e)
                        if e.is_stale_element_reference()
                            && started.elapsed() < Duration::from_secs(5) =>
                    {
                        continue
                    }
                    Err(e) => panic!("{css}: {e}"),
                }
            }
        })
    }

    /// Saves the page as `name` at a laptop's and a tablet's size.
    pub(crate) fn screenshots(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        self.runtime.block_on(async {
            for (w, h) in [(1280, 800), (800, 1280)] {
                self.client().set_window_size(w, h).await.unwrap();
                let png = self.client().screenshot().await.unwrap();
                assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
                std::fs::write(dir.join(format!("{name}-{w}x{h}.png")), png).unwrap();
            }
            self.client().set_window_size(1280, 800).await.unwrap();
        });
    }

    /// The file `name` once the browser has saved it whole (a few
    /// seconds at most: Chromium writes `name.crdownload` and renames it
    /// when done), or `None`.
    pub(crate) fn downloaded(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.downloads.path().join(name);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(bytes) = std::fs::read(&path) {
                return Some(bytes);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The names of the files in the download directory.
    pub(crate) fn downloads(&self) -> Vec<String> {
        std::fs::read_dir(self.downloads.path())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn sign_in(&self, username: &str, password: &str) {
        self.goto("/");
        assert_eq!(self.path(), "/sign-in");
        self.fill("#username", username);
        self.fill("#password", password);
        self.click("button[type=submit]");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn a_coordinator_signs_in_sees_an_overdue_deadline_opens_the_case_assigns_it_and_signs_out() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let case_id = uuid::Uuid::new_v4().to_string();
    let referral = build::referral(&case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .immediate_risk()
        .child("Child A")
        .envelope();
    assert_eq!(phone(&app, &staff.worker).send(&referral).status, 201);
    let number = app.case(&staff.coordinator, &case_id)["number"]
        .as_str()
        .unwrap()
        .to_string();
    let Some(browser) = Browser::open(&app) else {
        return;
    };

    browser.sign_in("manager", "a wrong password");
    assert_eq!(
        browser.text("#problem"),
        "The username or password is wrong."
    );
    browser.screenshots("sign-in-refused");

    browser.sign_in("manager", USER_PASSWORD);
    assert_eq!(browser.arrives_at("/today"), "/today");
    let cookies = browser
        .runtime
        .block_on(browser.client().get_all_cookies())
        .unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "casesync_session")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    let overdue = browser.text("section[aria-labelledby=overdue] table");
    assert!(overdue.contains(&number), "{overdue}");
    assert!(overdue.contains("aigerim"), "{overdue}");
    assert!(!browser.source().contains("Child A"));
    browser.screenshots("today");

    // The case, from its link on the list: the child, and the assignment.
    browser.click(&format!("a[href='/cases/{case_id}']"));
    assert_eq!(
        browser.arrives_at(&format!("/cases/{case_id}")),
        format!("/cases/{case_id}")
    );
    assert!(browser
        .text("section[aria-labelledby=child]")
        .contains("Child A"));
    browser.screenshots("case");
    browser.runtime.block_on(async {
        browser
            .client()
            .find(Locator::Css("#assignee"))
            .await
            .unwrap()
            .select_by_label("bolat")
            .await
            .unwrap();
    });
    browser.click("form[action$='/assignment'] button[type=submit]");
    assert_eq!(browser.text("[role=status]"), "The case is assigned.");
    assert!(browser.text("dl.facts").contains("bolat"));

    // The referral itself, in labelled sections.
    browser.click("ol.timeline a[href^='/submissions/']");
    assert!(browser.text("div.answers").contains("Child A"));
    browser.screenshots("submission");

    browser.click("form[action='/sign-out'] button");
    assert_eq!(browser.arrives_at("/sign-in"), "/sign-in");
    browser.goto("/today");
    assert_eq!(
        browser.path(),
        "/sign-in",
        "signed out: the pages need a sign-in again"
    );
}

#[test]
fn the_first_admin_changes_the_one_time_password_in_the_browser_first() {
    let app = TestApp::spawn();
    let initial = app.initial_admin_password();
    let Some(browser) = Browser::open(&app) else {
        return;
    };
    browser.sign_in("admin", &initial);
    assert_eq!(browser.arrives_at("/password"), "/password");
    browser.goto("/today");
    assert_eq!(
        browser.path(),
        "/password",
        "nothing else before the change"
    );
    browser.fill("#current_password", &initial);
    browser.fill("#new_password", "password12");
    browser.fill("#repeat_password", "password12");
    browser.click("form[action='/password'] button[type=submit]");
    assert!(browser.text("#problem").contains("too easy to guess"));
    browser.screenshots("password-refused");
    browser.fill("#current_password", &initial);
    browser.fill("#new_password", "amber kettle orbit lantern");
    browser.fill("#repeat_password", "amber kettle orbit lantern");
    browser.click("form[action='/password'] button[type=submit]");
    assert!(browser
        .text("[role=status]")
        .contains("Your password is changed"));
    browser.goto("/today");
    assert_eq!(browser.path(), "/today");
    assert!(browser
        .source()
        .contains("Your role sees no case deadlines."));
}
