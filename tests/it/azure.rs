//! The state store on Azure Blob Storage: Azurite (npm `azurite`), run by [`crate::servers`].
//! `.ci/run` installs it into the build cache, so CI always runs these tests; elsewhere they
//! are skipped, saying how to install it, when `azurite-blob` is not found.
//! `TIDEMARK_AZURITE` names the executable explicitly.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use tidemark::interval::{Interval, IntervalSet, IntervalUnit, parse_instant};
use tidemark::names::TableId;
use tidemark::project::{ModelName, StorageOptions, Warehouse};
use tidemark::state::{Action, PhysicalTable, StateStore};

use crate::servers;

/// Azurite's well-known development account and key (public; documented by Microsoft).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service.
pub struct Azurite {
    port: u16,
}

/// The Azurite of this test binary, started on first use; `None` (with a message) when it is
/// not installed outside CI.
pub fn azurite() -> Option<&'static Azurite> {
    static AZURITE: OnceLock<Option<Azurite>> = OnceLock::new();
    AZURITE
        .get_or_init(|| {
            let data = tempfile::tempdir().unwrap().keep();
            let data = data.to_string_lossy().into_owned();
            let port = match servers::find(
                "TIDEMARK_AZURITE",
                "node/node_modules/.bin/azurite-blob",
                "azurite-blob",
            ) {
                Some(bin) => servers::start(
                    &bin,
                    &[
                        "--blobHost",
                        "127.0.0.1",
                        "--blobPort",
                        "{port}",
                        "--location",
                        &data,
                        "--silent",
                        "--skipApiVersionCheck",
                    ],
                ),
                None => servers::missing(
                    "Azurite",
                    "npm install --prefix ~/.cache/tidemark/node azurite@3.35.0",
                )?,
            };
            // object_store reaches an emulator (`use_emulator`) at this address only.
            servers::set_child_env(
                "AZURITE_BLOB_STORAGE_URL",
                &format!("http://127.0.0.1:{port}"),
            );
            Some(Azurite { port })
        })
        .as_ref()
}

impl Azurite {
    /// Create a container (a Shared Key request signed with node's crypto: Azurite comes with
    /// node, and no Rust HMAC crate is a dependency of ours).
    pub fn container(&self, name: &str) {
        let script = format!(
            r#"const c=require('crypto'),h=require('http');const a='{ACCOUNT}',k=Buffer.from('{KEY}','base64');
const d=new Date().toUTCString(),v='2021-08-06';
const s=['PUT','','','','','','','','','','','',`x-ms-date:${{d}}\nx-ms-version:${{v}}`,`/${{a}}/${{a}}/{name}\nrestype:container`].join('\n');
const g=c.createHmac('sha256',k).update(s,'utf8').digest('base64');
h.request({{host:'127.0.0.1',port:{port},method:'PUT',path:`/${{a}}/{name}?restype=container`,headers:{{'x-ms-date':d,'x-ms-version':v,'Authorization':`SharedKey ${{a}}:${{g}}`,'Content-Length':0}}}},r=>{{process.exit(r.statusCode==201?0:1)}}).end();"#,
            port = self.port
        );
        // A few tries: a refused connection right after start-up has been seen once.
        let created = (0..5).any(|i| {
            std::thread::sleep(std::time::Duration::from_millis(300 * i));
            std::process::Command::new("node")
                .args(["-e", &script])
                .status()
                .expect("run node")
                .success()
        });
        assert!(created, "creating container {name} failed");
    }

    /// `[storage]` options that reach this Azurite.
    pub fn options(&self) -> StorageOptions {
        let pairs = [
            ("account_name", ACCOUNT.to_string()),
            ("access_key", KEY.to_string()),
            (
                "endpoint",
                format!("http://127.0.0.1:{}/{ACCOUNT}", self.port),
            ),
            ("allow_http", "true".to_string()),
        ];
        StorageOptions::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
        )
    }
}

impl Azurite {
    /// Point the project at `p` at a fresh warehouse on this Azurite: a new container.
    pub fn warehouse(&self, p: &std::path::Path, container: &str) {
        self.container(container);
        crate::common::set_warehouse(p, &format!("az://{container}/wh"), &self.project_options());
    }

    /// `[storage]` options of a project on this Azurite, as a user of the emulator writes them:
    /// `use_emulator` (Azurite ignores the `startFrom` of a listing, which object_store then
    /// filters itself), the account and its key; the processes get the address from
    /// `AZURITE_BLOB_STORAGE_URL`.
    pub fn project_options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("use_emulator", "true".into()),
            ("account_name", ACCOUNT.into()),
            ("access_key", KEY.into()),
        ]
    }
}

fn day(d: u32) -> chrono::DateTime<chrono::Utc> {
    parse_instant(&format!("2024-01-{d:02}")).unwrap().at
}

#[test]
fn the_state_on_azure_passes_the_probe_and_writers_racing_on_it_never_lose_a_commit() {
    let Some(az) = azurite() else { return };
    az.container("state-race");
    let warehouse = Warehouse::ObjectStore("az://state-race/wh".into());
    let open = || StateStore::open_with(&warehouse, &az.options()).unwrap();
    let id = TableId::parse("s/m__v").unwrap();
    open()
        .transact("t", |_| {
            Ok(vec![Action::PutTable {
                table: PhysicalTable {
                    id: id.clone(),
                    name: ModelName::parse("s.m").unwrap(),
                    version: "v".into(),
                    generation: 0,
                    interval_unit: IntervalUnit::Day,
                    intervals: IntervalSet::new(),
                    created_at: day(1),
                },
            }])
        })
        .unwrap();
    std::thread::scope(|scope| {
        for w in 0..3u32 {
            let (open, id) = (&open, id.clone());
            scope.spawn(move || {
                let store = open();
                for i in 0..8u32 {
                    let d = 1 + (w * 8 + i) % 27;
                    store
                        .transact("w", |_| {
                            Ok(vec![Action::AddIntervals {
                                table: id.clone(),
                                intervals: IntervalSet::of(Interval::new(day(d), day(d + 1))),
                            }])
                        })
                        .unwrap();
                }
            });
        }
    });
    let s = open().read().unwrap();
    assert_eq!(s.seq, 25, "every commit landed once");
    assert_eq!(
        s.intervals("s/m__v"),
        IntervalSet::of(Interval::new(day(1), day(25)))
    );
}

/// Wrong credentials through the CLI (Azurite checks Shared Key signatures, moto does not):
/// exit 2 with `error:` and a `hint:`, no secret, and nothing written.
#[test]
fn wrong_credentials_are_an_error_with_a_hint_and_write_nothing() {
    use crate::common::{copy_project, set_warehouse, sushi, tidemark};
    let Some(az) = azurite() else { return };
    az.container("wrong-key");
    let (_t, p) = copy_project(&sushi());
    // A well-formed key that is not the account's.
    const WRONG: &str = "d3Jvbmcta2V5LWRvLW5vdC1wcmludC0xMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Ng==";
    let mut options = az.project_options();
    for (k, v) in options.iter_mut() {
        if *k == "access_key" {
            *v = WRONG.to_string();
        }
    }
    set_warehouse(&p, "az://wrong-key/wh", &options);
    let r = tidemark(&p, &["--execution-time", "2024-01-31", "plan", "--apply"]);
    let t = r.transcript();
    assert_eq!(r.code, 2, "{t}");
    assert!(r.stderr.starts_with("error: "), "{t}");
    assert!(r.stderr.contains("hint: "), "{t}");
    assert!(!t.contains(WRONG) && !t.contains("panicked"), "{t}");
    // With the right key: nothing was written (no environment, no probe marker).
    set_warehouse(&p, "az://wrong-key/wh", &az.project_options());
    let r = tidemark(&p, &["env", "list"]);
    assert_eq!(r.code, 0, "{}", r.transcript());
    assert!(!r.stdout.contains("prod"), "{}", r.stdout);
}
