//! Signature verification, token verification and the nonce store, without nginx.
//! `cargo bench --bench auth`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ngx_http_relay_guard_module::auth::canonical::{hex_digest, RequestParts};
use ngx_http_relay_guard_module::auth::headers::RawSignatureHeaders;
use ngx_http_relay_guard_module::auth::keys::KeyRing;
use ngx_http_relay_guard_module::auth::nonce_table::{check_and_insert, Fingerprinter, Slot};
use ngx_http_relay_guard_module::auth::{token, verify};
use sha2::{Digest, Sha256};

const SECRET: &str = "bench-secret-0123456789abcdef";

fn ring() -> KeyRing {
    let t = hex::encode(Sha256::digest(b"static-token-for-bench-0123"));
    let doc =
        format!(r#"{{"keys":[{{"id":"alice","secrets":["{SECRET}"],"token_sha256":"{t}"}}]}}"#);
    KeyRing::parse("bench", doc.as_bytes()).expect("bench keys")
}

/// What the module does per signed request once the body is read: hash the body, parse the
/// headers, build the string to sign into the MAC and compare.
fn signature(c: &mut Criterion) {
    let ring = ring();
    let mut g = c.benchmark_group("verify_signature");
    for size in [0usize, 1024, 100 * 1024, 1024 * 1024] {
        let body = vec![b'x'; size];
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let body_hex = hex_digest(&digest);
        let parts = RequestParts {
            method: b"POST",
            target: b"/v1/messages?beta=true",
            body_sha256_hex: &body_hex,
        };
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        let raw0 = RawSignatureHeaders {
            key_id: Some(b"alice"),
            timestamp: Some(b"1767225600"),
            nonce: Some(b"0123456789abcdef0123"),
            signature: None,
        };
        let h0 = RawSignatureHeaders {
            signature: Some(&[b'0'; 64]),
            ..raw0
        }
        .parse()
        .unwrap();
        ngx_http_relay_guard_module::auth::canonical::for_each_piece(&h0, &parts, |p| {
            hmac::Mac::update(&mut mac, p)
        });
        let sig = hex::encode(hmac::Mac::finalize(mac).into_bytes());
        let raw = RawSignatureHeaders {
            signature: Some(sig.as_bytes()),
            ..raw0
        };
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("body_{size}B"), |b| {
            b.iter(|| {
                let d: [u8; 32] = Sha256::digest(black_box(&body)).into();
                let hex = hex_digest(&d);
                let parts = RequestParts {
                    method: b"POST",
                    target: b"/v1/messages?beta=true",
                    body_sha256_hex: &hex,
                };
                let h = raw.parse().unwrap();
                let key = verify::lookup(&ring, h.key_id).unwrap();
                verify::verify_signature(key, &h, &parts).unwrap();
            })
        });
        g.bench_function(format!("sha256_only_{size}B"), |b| {
            b.iter(|| Sha256::digest(black_box(&body)))
        });
    }
    g.finish();
}

fn tokens(c: &mut Criterion) {
    let ring = ring();
    let short = token::mint("alice", SECRET.as_bytes(), 2_000_000_000);
    c.bench_function("token/short_lived", |b| {
        b.iter(|| token::verify(&ring, black_box(short.as_bytes()), 1_999_999_000, 3600).unwrap())
    });
    c.bench_function("token/static", |b| {
        b.iter(|| token::verify(&ring, black_box(b"static-token-for-bench-0123"), 0, 3600).unwrap())
    });
}

/// Check-and-insert into a 10 MB table (the README's suggested zone) in steady state: 3,600
/// inserts per simulated second with a 60 s lifetime keep about half the slots live.
fn nonce_store(c: &mut Criterion) {
    let fpr = Fingerprinter::new(&[9; 32]);
    let mut table = vec![Slot::default(); 10 * 1024 * 1024 / std::mem::size_of::<Slot>() / 16 * 16];
    let mut n = 0u64;
    let step = |table: &mut [Slot], nonce: &str, n: u64| {
        let now = 1_000 + n / 3_600;
        let fp = fpr.fingerprint(b"alice", nonce.as_bytes());
        check_and_insert(table, fp, now + 60, now)
    };
    for i in 0..300_000u64 {
        n = i;
        step(&mut table, &format!("bench-nonce-{i:020}"), i);
    }
    c.bench_function("nonce/fingerprint_only", |b| {
        b.iter(|| fpr.fingerprint(b"alice", black_box(b"bench-nonce-00000000000000000001")))
    });
    c.bench_function("nonce/fingerprint+check_and_insert", |b| {
        b.iter_batched(
            || {
                n += 1;
                (format!("bench-nonce-{n:020}"), n)
            },
            |(nonce, n)| {
                let r = step(&mut table, &nonce, n);
                assert_eq!(
                    r,
                    ngx_http_relay_guard_module::auth::nonce_table::Insert::Fresh
                );
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, signature, tokens, nonce_store);
criterion_main!(benches);
