//! End-to-end tests of the public API over a corpus of secrets in every position.

use super::fingerprint::fingerprint;
use super::patterns::Ctx;
use super::spans::Spans;
use super::*;

const KEY: [u8; 32] = [0x5a; 32];

use super::test_rng::xorshift;

fn redactor() -> Redactor {
    let mut cfg = RedactConfig::with_defaults();
    cfg.add_literal(UPSTREAM_OPAQUE.as_bytes());
    cfg.add_literal(UPSTREAM_KEY.as_bytes());
    Redactor::new(&cfg, KEY)
}

const UPSTREAM_KEY: &str =
    "sk-ant-api03-Zq8xW3vT9mK2pL5nR7sY1uB4cD6eF0gH_iJ-kLmNoPqRsTuVwXyZ0123456789abcdefAA";
const UPSTREAM_OPAQUE: &str = "opaque-upstream-Secret-0123456789";
const ADMIN_KEY: &str = "sk-ant-admin01-AdminBody0123456789_abcdefghijklmnopqrstuvwxyzXYZ";
const OAT: &str = "sk-ant-oat01-OauthAccessToken0123456789abcdefghijklmnopqrstuv";
const ORT: &str = "sk-ant-ort01-OauthRefreshToken0123456789abcdefghijklmnopqrstu";
const RGT: &str =
    "rgt1.client-7.1767225600.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const CLIENT_OPAQUE: &str = "client-presented-opaque-token-XYZ123";

/// Every secret with the number of leading public bytes allowed to remain.
fn corpus() -> Vec<(&'static str, usize)> {
    vec![
        (UPSTREAM_KEY, 13),
        (UPSTREAM_OPAQUE, 0),
        (ADMIN_KEY, 15),
        (OAT, 13),
        (ORT, 13),
        (RGT, 5),
        (CLIENT_OPAQUE, 0),
    ]
}

/// Fails if any 12-byte window of `secret` that reaches past its public prefix is in `out`
/// (or the whole secret, when it is shorter than 12 bytes).
fn assert_no_leak(out: &[u8], secret: &[u8], public: usize) {
    let w = 12.min(secret.len());
    for start in 0..=secret.len() - w {
        if start + w <= public {
            continue;
        }
        let win = &secret[start..start + w];
        assert!(
            !out.windows(w).any(|x| x == win),
            "leaked {:?} in {:?}",
            String::from_utf8_lossy(win),
            String::from_utf8_lossy(out)
        );
    }
}

fn assert_corpus_hidden(out: &[u8]) {
    for (s, public) in corpus() {
        assert_no_leak(out, s.as_bytes(), public);
    }
}

fn mask(f: impl Fn(&mut Vec<u8>) -> bool, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if f(&mut out) {
        out
    } else {
        input.to_vec()
    }
}

fn header(r: &Redactor, name: &str, value: &str, extra: &[&[u8]]) -> String {
    let v = value.as_bytes();
    String::from_utf8(mask(|o| r.mask_header(name.as_bytes(), v, extra, o), v)).unwrap()
}

fn fp(s: &str) -> String {
    format!(
        "[redacted:{}]",
        String::from_utf8(fingerprint(&KEY, s.as_bytes()).to_vec()).unwrap()
    )
}

#[test]
fn nothing_matched_returns_false_and_leaves_out_alone() {
    let r = redactor();
    let mut out = b"previous".to_vec();
    for (n, v) in [
        ("user-agent", "claude-cli/1.0.83 (external, cli)"),
        ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20"),
        ("content-type", "application/json"),
        ("x-api-key", ""),
        ("authorization", "Bearer "),
    ] {
        assert!(!r.mask_header(
            n.as_bytes(),
            v.as_bytes(),
            &[CLIENT_OPAQUE.as_bytes()],
            &mut out
        ));
    }
    assert!(!r.mask_args(b"beta=true&key=&x", &[], &mut out));
    assert!(!r.mask_target(b"POST /v1/messages?beta=true HTTP/1.1", &[], &mut out));
    assert_eq!(out, b"previous");
}

#[test]
fn default_headers() {
    let r = redactor();
    assert_eq!(
        header(&r, "Authorization", "Bearer abcdefgh", &[]),
        format!("Bearer {}", fp("abcdefgh"))
    );
    assert_eq!(
        header(&r, "proxy-authorization", "Basic dXNlcjpwYXNz", &[]),
        format!("Basic {}", fp("dXNlcjpwYXNz"))
    );
    assert_eq!(
        header(&r, "X-Api-Key", "plainsecret", &[]),
        fp("plainsecret")
    );
    assert_eq!(
        header(&r, "x-signature", "t=1700000000,v1=abcd", &[]),
        fp("t=1700000000,v1=abcd")
    );
    assert_eq!(
        header(&r, "cookie", "a=1; b=two", &[]),
        format!("a={}; b={}", fp("1"), fp("two"))
    );
    for h in [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "cookie",
        "x-signature",
        "COOKIE",
    ] {
        assert!(r.is_secret_header(h.as_bytes()), "{h}");
    }
    assert!(!r.is_secret_header(b"user-agent"));
}

#[test]
fn anthropic_keys_keep_public_prefix_and_share_fingerprint_across_places() {
    let r = redactor();
    let body = &UPSTREAM_KEY[13..];
    let want = format!("sk-ant-api03-{}", fp(body));
    assert_eq!(header(&r, "x-api-key", UPSTREAM_KEY, &[]), want);
    assert_eq!(
        header(&r, "authorization", &format!("Bearer {UPSTREAM_KEY}"), &[]),
        format!("Bearer {want}")
    );
    assert_eq!(
        header(
            &r,
            "x-forwarded-for",
            &format!("junk {UPSTREAM_KEY}, x"),
            &[]
        ),
        format!("junk {want}, x")
    );
    let q = format!("key={UPSTREAM_KEY}&a=1");
    assert_eq!(
        mask(|o| r.mask_args(q.as_bytes(), &[], o), q.as_bytes()),
        format!("key={want}&a=1").as_bytes()
    );
}

#[test]
fn custom_header_and_arg_names() {
    let mut cfg = RedactConfig::with_defaults();
    cfg.add_header(b"X-Goog-Api-Key");
    cfg.add_arg(b"Session");
    let r = Redactor::new(&cfg, KEY);
    assert_eq!(
        header(&r, "x-goog-api-key", "AIzaSyabc", &[]),
        fp("AIzaSyabc")
    );
    let mut out = Vec::new();
    assert!(r.mask_args(b"SESSION=s1", &[], &mut out));
    assert_eq!(out, format!("SESSION={}", fp("s1")).as_bytes());
    assert!(!Redactor::new(&RedactConfig::empty(), KEY).is_secret_header(b"cookie"));
}

#[test]
fn literals_config_and_extra() {
    let r = redactor();
    let v = format!("a {UPSTREAM_OPAQUE} b {CLIENT_OPAQUE} c");
    let got = header(&r, "x-custom", &v, &[CLIENT_OPAQUE.as_bytes()]);
    assert_eq!(
        got,
        format!("a {} b {} c", fp(UPSTREAM_OPAQUE), fp(CLIENT_OPAQUE))
    );
    // Without the extra, the client's opaque token has no recognizable format.
    assert!(header(&r, "x-custom", &v, &[]).contains(CLIENT_OPAQUE));
    // Short extras are ignored rather than masking ordinary text everywhere.
    assert_eq!(header(&r, "x-custom", "abc abc", &[b"abc"]), "abc abc");
}

#[test]
fn overlapping_patterns_become_one_mask() {
    let r = redactor();
    // A literal that contains a key: the literal's span swallows the key's.
    let lit = format!("prefix:{OAT}");
    let got = header(&r, "x-custom", &format!("<{lit}>"), &[lit.as_bytes()]);
    assert_eq!(got, format!("<{}>", fp(&lit)));
    // Bearer + key + literal of the same key: one mask after the public prefix.
    let got = header(&r, "x-custom", &format!("bearer {OAT}"), &[OAT.as_bytes()]);
    assert_eq!(got, format!("bearer sk-ant-oat01-{}", fp(&OAT[13..])));
    // rgt1 token presented as an extra and inside Authorization.
    let got = header(
        &r,
        "authorization",
        &format!("Bearer {RGT}"),
        &[RGT.as_bytes()],
    );
    assert_eq!(got, format!("Bearer rgt1.{}", fp(&RGT[5..])));
}

#[test]
fn request_line_and_unparsed_uri() {
    let r = redactor();
    let line = "POST /v1/messages?beta=true&key=abc%2Fdef&token=t1&KEY=again HTTP/1.1";
    let got = mask(|o| r.mask_target(line.as_bytes(), &[], o), line.as_bytes());
    assert_eq!(
        String::from_utf8(got).unwrap(),
        format!(
            "POST /v1/messages?beta=true&key={}&token={}&KEY={} HTTP/1.1",
            fp("abc%2Fdef"),
            fp("t1"),
            fp("again")
        )
    );
    let uri = format!("/v1/keys/{ADMIN_KEY}/x?access_token=Bearer%20{RGT}&sig=&q#key=frag");
    let got = mask(|o| r.mask_target(uri.as_bytes(), &[], o), uri.as_bytes());
    assert_corpus_hidden(&got);
    let s = String::from_utf8(got).unwrap();
    assert!(s.starts_with("/v1/keys/sk-ant-admin01-[redacted:"), "{s}");
    assert!(s.contains("&sig=&q#key=frag"), "{s}");
    // No '?': patterns only; arg names mean nothing in a path.
    assert!(!r.mask_target(b"/key=abc/token=x", &[], &mut Vec::new()));
}

#[test]
fn referer_gets_args_masked() {
    let r = redactor();
    assert_eq!(
        header(&r, "Referer", "https://a.example/p?apikey=zzz&x=1", &[]),
        format!("https://a.example/p?apikey={}&x=1", fp("zzz"))
    );
}

#[test]
fn invalid_utf8_is_handled_bytewise() {
    let r = redactor();
    let mut v = vec![0xff, 0xfe, b' '];
    v.extend_from_slice(b"Bearer \xc3\x28tok\xff\xfe");
    v.extend_from_slice(b" \x80sk-ant-api03-AB\xffCD");
    let mut out = Vec::new();
    assert!(r.mask_header(b"x-\xff", &v, &[b"\xc3\x28tok\xff\xfe"], &mut out));
    assert!(out.starts_with(&[0xff, 0xfe, b' ']));
    assert_no_leak(&out, b"\xc3\x28tok\xff\xfe", 0);
    assert!(!out.windows(4).any(|w| w == b"AB\xffC"));
    assert!(r.mask_args(b"key=\xff\xfe\x00&\xff=\xff", &[], &mut out));
    assert!(r.mask_target(b"GET /\xff?token=\x00\x01 HTTP/1.1", &[], &mut out));
}

/// Puts every corpus secret in every kind of place and checks none survives.
#[test]
fn no_secret_fragment_survives_anywhere() {
    let r = redactor();
    let extra = [CLIENT_OPAQUE.as_bytes(), RGT.as_bytes()];
    for (s, _) in corpus() {
        let values = [
            s.to_string(),
            format!("Bearer {s}"),
            format!("x,{s};y"),
            format!("\"{s}\""),
            format!("a{s}b{s}"),
            format!("sid={s}; other={s}"),
            format!("https://h/p?key={s}&token={s}"),
        ];
        for v in &values {
            for name in ["authorization", "x-api-key", "cookie", "x-other", "referer"] {
                let out = mask(
                    |o| r.mask_header(name.as_bytes(), v.as_bytes(), &extra, o),
                    v.as_bytes(),
                );
                assert_corpus_hidden(&out);
            }
        }
        let q = format!("a=1&key={s}&x=Bearer+{s}&y={s}");
        assert_corpus_hidden(&mask(
            |o| r.mask_args(q.as_bytes(), &extra, o),
            q.as_bytes(),
        ));
        let line = format!("GET /{s}?token={s} HTTP/1.1");
        assert_corpus_hidden(&mask(
            |o| r.mask_target(line.as_bytes(), &extra, o),
            line.as_bytes(),
        ));
    }
}

#[test]
fn one_megabyte_values_complete() {
    let r = redactor();
    let mut v = Vec::with_capacity(1 << 20);
    while v.len() < (1 << 20) {
        v.extend_from_slice(b"lorem ipsum bearer-ish sk-ant rgt1 k=v&key=");
    }
    v.extend_from_slice(UPSTREAM_KEY.as_bytes());
    let mut out = Vec::new();
    assert!(r.mask_header(b"x-long", &v, &[CLIENT_OPAQUE.as_bytes()], &mut out));
    assert_corpus_hidden(&out);
    assert!(r.mask_target(&v, &[], &mut out));
    assert!(r.mask_args(&v, &[], &mut out));
    // Many spans: the tail is masked as one, so output stays near the input size.
    let cookies = "a=1; ".repeat(200_000);
    assert!(r.mask_header(b"cookie", cookies.as_bytes(), &[], &mut out));
    assert!(out.len() < cookies.len() + 64 * 20);
    // Adversarial periodic literal against periodic text.
    let hostile = vec![b'a'; 1 << 20];
    let lit = [vec![b'a'; 4000], b"b".to_vec()].concat();
    assert!(!r.mask_header(b"x-long", &hostile, &[&lit], &mut out));
    let many_amps = "&".repeat(1 << 20) + "key=zz";
    assert!(r.mask_args(many_amps.as_bytes(), &[], &mut out));
    assert!(out.ends_with(format!("key={}", fp("zz")).as_bytes()));
}

#[test]
fn fingerprint_depends_on_key() {
    let a = Redactor::new(&RedactConfig::with_defaults(), [1; 32]);
    let b = Redactor::new(&RedactConfig::with_defaults(), [2; 32]);
    assert_eq!(a.fingerprint(b"s"), fingerprint(&[1; 32], b"s"));
    assert_ne!(a.fingerprint(b"s"), b.fingerprint(b"s"));
}

#[test]
fn redactor_is_send_sync_and_debug_hides_literals() {
    fn check<T: Send + Sync>() {}
    check::<Redactor>();
    let dbg = format!("{:?} {:?}", RedactConfig::with_defaults(), redactor());
    assert!(!dbg.contains("opaque-upstream"));
}

/// One masking call by name: a header name, or `args` / `target`. Headers go through the
/// length check first, as the glue does.
fn mask_as<'t>(what: &str, m: &RequestMasker<'t>, text: &'t [u8], out: &mut Vec<u8>) -> bool {
    match what {
        "args" => m.mask_args(text, out),
        "target" => m.mask_target(text, out),
        header => {
            m.header_may_hold_secret(header.len(), text.len())
                && m.mask_header(header.as_bytes(), text, out)
        }
    }
}

/// Fragments of every pattern, literal, separator and mask (whole, cut short, in other cases),
/// glued at random so that near misses, repeats and nestings are common.
fn fragments() -> Vec<&'static [u8]> {
    vec![
        b"sk-ant-",
        b"sk-ant-api03-",
        b"k-",
        b"SK-ANT-",
        b"Sk-Ant-Api03-",
        b"sK-aNt-oat01-",
        b"rgt1.",
        b"gt1",
        b"rGT1.",
        b"rgs1_",
        b"RGS1_",
        b"gs1",
        b"%73k-ant-",
        b"sk%2Dant%2dapi03%2D",
        b"%25",
        b"%2",
        b"%41",
        b"%3b",
        b"%26",
        b"%3F",
        b"%72gt1.",
        b"STATIC-rgs1_Q9x-zzTop",
        b"bearer ",
        b"Bearer Bearer ",
        b"Bearer%20",
        b"bEARER+",
        b"Basic ",
        b"Token\t",
        b"=",
        b"be",
        b"key=",
        b"x-api-key: ",
        b"sid=",
        b"?",
        b"&",
        b"#",
        b" ",
        b";",
        b",",
        b"\"",
        b"'",
        b"\t",
        b"%20",
        b"+",
        b"x",
        b"ab-_.9",
        b"AbCdEfGhIjKlMnOp",
        b"opaque-up",
        b"client-presented",
        b"Zz9!",
        b"[redacted:0123abcd]",
        b"[redacted:",
        &UPSTREAM_OPAQUE.as_bytes()[..20],
        UPSTREAM_OPAQUE.as_bytes(),
        CLIENT_OPAQUE.as_bytes(),
        &RGT.as_bytes()[..12],
        RGT.as_bytes(),
        &UPSTREAM_KEY.as_bytes()[..16],
        UPSTREAM_KEY.as_bytes(),
        OAT.as_bytes(),
    ]
}

/// The credentials a request may present, as the access handler takes them from the headers:
/// plain, quoted, several joined, or with a scheme word left in.
fn extra_choices() -> Vec<&'static [u8]> {
    vec![
        CLIENT_OPAQUE.as_bytes(),
        RGT.as_bytes(),
        b"Zz9!Zz9!x",
        b"\"client-presented-opaque-token-XYZ123\"",
        b"client-presented-opaque-token-XYZ123, AbCdEfGhIjKlMnOp",
        b"AbCdEfGhIjKlMnOp;client-presented-opaque-token-XYZ123",
        b"Bearer client-presented-opaque-token-XYZ123",
        b"'AbCdEfGhIjKlMnOp'",
        b"rgs1_Q9x-zzTopStaticToken",
        b"Up%41per-Opaque",
    ]
}

/// A random value from `fragments` (up to `max` of them).
fn random_text(next: &mut impl FnMut() -> u64, fragments: &[&[u8]], max: u64) -> Vec<u8> {
    let mut text = Vec::new();
    for _ in 0..(next() % (max + 1)) {
        let f = fragments[(next() % fragments.len() as u64) as usize];
        let cut = (next() % (f.len() as u64 + 1)) as usize;
        text.extend_from_slice(if next() % 3 == 0 { &f[..cut] } else { f });
    }
    text
}

/// Up to three presented credentials, picked at random.
fn random_extras(next: &mut impl FnMut() -> u64, choices: &[&'static [u8]]) -> Vec<&'static [u8]> {
    (0..next() % 4)
        .map(|_| choices[(next() % choices.len() as u64) as usize])
        .collect()
}

/// The prefilter only decides whether to run the scanners; with it or without it every value
/// must come out the same, including the parts of a text the masker has already seen clean and
/// the full scan of secret headers.
#[test]
fn prefilter_never_changes_a_result() {
    let r = redactor();
    let (fragments, choices) = (fragments(), extra_choices());
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    for _ in 0..20_000 {
        let text = random_text(&mut next, &fragments, 5);
        let extras = random_extras(&mut next, &choices);
        let fast = r.for_request(&extras);
        let slow = r.for_request(&extras).without_prefilter();
        // Parts of a text already seen are where the masker's memory of clean text applies.
        for what in ["x-custom", "target"] {
            let a = mask_as(what, &fast, &text, &mut out_a).then(|| out_a.clone());
            let b = mask_as(what, &slow, &text, &mut out_b).then(|| out_b.clone());
            assert_eq!(a, b, "{what}: {:?}", String::from_utf8_lossy(&text));
        }
        for _ in 0..3 {
            let a = (next() % (text.len() as u64 + 1)) as usize;
            let z = a + (next() % ((text.len() - a) as u64 + 1)) as usize;
            let part = &text[a..z];
            let x = fast.mask_target(part, &mut out_a).then(|| out_a.clone());
            let y = slow.mask_target(part, &mut out_b).then(|| out_b.clone());
            assert_eq!(x, y, "part {:?}", String::from_utf8_lossy(part));
            let x = fast.mask_args(part, &mut out_a).then(|| out_a.clone());
            let y = slow.mask_args(part, &mut out_b).then(|| out_b.clone());
            assert_eq!(x, y, "args part {:?}", String::from_utf8_lossy(part));
        }
        for name in [&b"authorization"[..], b"x-api-key", b"cookie"] {
            let a = fast
                .mask_header(name, &text, &mut out_a)
                .then(|| out_a.clone());
            let b = slow
                .mask_secret_header_fully(name, &text, &mut out_b)
                .then(|| out_b.clone());
            assert_eq!(
                a,
                b,
                "full scan of {name:?}: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}

/// No secret survives, masking twice changes nothing, and the prefilter changes nothing, for
/// every field kind over random values (see [`check_mask_properties`]).
#[test]
fn mask_properties_hold_on_random_values() {
    let r = redactor();
    let (fragments, choices) = (fragments(), extra_choices());
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..6_000 {
        let text = random_text(&mut next, &fragments, 7);
        let extras = random_extras(&mut next, &choices);
        if let Err(e) = check_mask_properties(&r, &extras, &text) {
            panic!("{e} (extras {extras:?})");
        }
    }
}

#[test]
fn parts_of_a_clean_request_line_are_not_read_again() {
    let r = redactor();
    let line = b"GET /v1/messages?beta=true HTTP/1.1".to_vec();
    let m = r.for_request(&[]);
    let mut out = Vec::new();
    assert!(!m.mask_target(&line, &mut out));
    assert_eq!(m.clean_query.get()[0], (line[17..].as_ptr() as usize, 9));
    assert_eq!(
        m.clean.get(),
        (line.as_ptr() as usize, line.as_ptr() as usize + line.len())
    );
    assert!(!m.mask_target(&line[4..26], &mut out));
    assert!(!m.mask_args(&line[17..26], &mut out));
}

/// Texts shorter than the prefilter's minimum skip every scan, in headers and targets alike:
/// no pattern can match in them. Checked against the scanners themselves over every text of up
/// to five bytes from the bytes the patterns are made of.
#[test]
fn no_pattern_fits_in_fewer_bytes_than_the_minimum() {
    let alphabet = b"rgt1.sk-anbeR+%2 X";
    let mut text = Vec::new();
    for n in 1..prefilter::MIN_MATCH_LEN {
        let mut idx = vec![0usize; n];
        for _ in 0..alphabet.len().pow(n as u32) {
            text.clear();
            text.extend(idx.iter().map(|&i| alphabet[i]));
            for ctx in [Ctx::Text, Ctx::Query] {
                let mut s = Spans::new();
                patterns::scan(&text, ctx, 0, &mut s);
                assert!(s.is_empty(), "{:?}", String::from_utf8_lossy(&text));
            }
            for d in idx.iter_mut() {
                *d += 1;
                if *d < alphabet.len() {
                    break;
                }
                *d = 0;
            }
        }
    }
    // And the minimum is no larger than the shortest match there is.
    let shortest = b"rgt1.x";
    assert_eq!(shortest.len(), prefilter::MIN_MATCH_LEN);
    let mut s = Spans::new();
    patterns::scan(shortest, Ctx::Text, 0, &mut s);
    assert!(!s.is_empty());
}

/// A configured literal shaped like a key without a kind (`sk-ant-` and a short lowercase
/// word) is not left to the pattern scanner: followed by `-` in the text, the scanner would
/// read the word as a public kind and keep it.
#[test]
fn a_kindless_sk_ant_literal_is_masked_where_a_dash_follows_it() {
    let secret = "sk-ant-abc12345";
    let mut cfg = RedactConfig::with_defaults();
    cfg.add_literal(secret.as_bytes());
    let r = Redactor::new(&cfg, KEY);
    for text in [
        format!("x {secret}-zz y"),
        secret.to_string(),
        format!("{secret}-"),
    ] {
        for name in ["x-custom", "x-api-key"] {
            let out = header(&r, name, &text, &[]);
            assert!(!out.contains("abc12345"), "{name}: {out}");
        }
        let q = format!("q={text}");
        let out = mask(|o| r.mask_args(q.as_bytes(), &[], o), q.as_bytes());
        assert!(!String::from_utf8_lossy(&out).contains("abc12345"), "{q}");
    }
}

/// The first failures the property test found, kept as plain cases.
#[test]
fn masking_twice_changes_nothing() {
    let r = redactor();
    let cases: [(&str, String); 5] = [
        // A bearer token swallowing a cookie's `=` takes the name with it.
        ("cookie", format!("bearer =&{OAT}")),
        ("cookie", "\tBearer Bearer sid=".to_string()),
        // A literal that starts inside a key's public prefix takes the prefix with it.
        ("x-custom", format!("Bearer%20sk-ant-x{UPSTREAM_OPAQUE}")),
        ("x-custom", format!("opaque-upsk-ant-api0{UPSTREAM_OPAQUE}")),
        ("x-api-key", format!("sk-ant-api{CLIENT_OPAQUE}")),
    ];
    for (name, v) in cases {
        let once = header(&r, name, &v, &[CLIENT_OPAQUE.as_bytes()]);
        assert_ne!(once, v, "{name}: {v}");
        let twice = header(&r, name, &once, &[CLIENT_OPAQUE.as_bytes()]);
        assert_eq!(twice, once, "{name}: {v}");
    }
}

/// A presented credential quoted, joined with others or with a scheme word left in: each part
/// is masked where it was pasted alone.
#[test]
fn parts_of_a_presented_credential_are_masked_alone() {
    let r = redactor();
    let tok = "AbCdEfGhIjKlMnOp";
    for extra in [
        format!("\"{CLIENT_OPAQUE}\""),
        format!("{tok}, {CLIENT_OPAQUE}"),
        format!("{CLIENT_OPAQUE};{tok}"),
        format!("Bearer {CLIENT_OPAQUE}"),
    ] {
        let v = format!("x {CLIENT_OPAQUE} y");
        let out = header(&r, "user-agent", &v, &[extra.as_bytes()]);
        assert_eq!(out, format!("x {} y", fp(CLIENT_OPAQUE)), "{extra}");
    }
    // The whole credential is still one secret with one fingerprint.
    let joined = format!("{tok}, {CLIENT_OPAQUE}");
    let out = header(&r, "x-custom", &format!("<{joined}>"), &[joined.as_bytes()]);
    assert_eq!(out, format!("<{}>", fp(&joined)));
}

/// `Bearer Bearer tok` and keys in any letter case, through the public API.
#[test]
fn repeated_scheme_words_and_upper_case_keys_are_masked() {
    let r = redactor();
    let out = header(
        &r,
        "x-custom",
        &format!("Bearer Bearer {CLIENT_OPAQUE}"),
        &[],
    );
    assert_no_leak(out.as_bytes(), CLIENT_OPAQUE.as_bytes(), 0);
    let upper = UPSTREAM_KEY.to_ascii_uppercase();
    let mixed = format!("Sk-Ant-Api03-{}", &UPSTREAM_KEY[13..]);
    for v in [&upper, &mixed] {
        for what in ["x-custom", "cookie", "args", "target"] {
            let text = format!("a=1&q={v}&b");
            let m = r.for_request(&[]);
            let out = mask(|o| mask_as(what, &m, text.as_bytes(), o), text.as_bytes());
            assert_no_leak(&out, v.as_bytes(), 7);
        }
    }
}

/// A delimiter inside another match becomes part of a mask, and a mask ends nothing: the
/// secret that stopped at the delimiter is read on past the mask at once, not when the output
/// is masked again. The fuzzer's finding (a presented credential holding the `\r` that ended a
/// bearer token, then `\xff`), and the same with an argument's `&` and a cookie's `;`.
#[test]
fn a_covered_delimiter_does_not_make_masking_twice_mask_more() {
    let cases: [(&[u8], &[u8]); 4] = [
        (
            b"BGGzGGGGGGGG\x97x\xfa\x01\x00\x00\r?",
            b"Bearer x?abc\xdade:BGGzGGGGGGGG\x97x\xfa\x01\x00\x00\r?\xffBearer x?abc\xdade:::::::",
        ),
        (b"c&zz12345", b"key=abc&zz12345yy&b=1"),
        (b"z; bxxxxxx", b"a=xyz; bxxxxxx=1"),
        (b"tok-1234;5678", b"Bearer tok-1234;56789 rest"),
    ];
    for (extra, text) in cases {
        let input = [extra, &[0xff], text].concat();
        super::check_fuzz_input(&input);
    }
    // The first pass reads on to the space: no part of `\xffBearer` is left for a second one.
    let r = Redactor::new(&RedactConfig::with_defaults(), [7; 32]);
    let extra: &[u8] = b"BGGzGGGGGGGG\x97x\xfa\x01\x00\x00\r?";
    let m = r.for_request(std::slice::from_ref(&extra));
    let mut out = Vec::new();
    let text: &[u8] = b"Bearer x?abc:BGGzGGGGGGGG\x97x\xfa\x01\x00\x00\r?\xffBearer y";
    assert!(m.mask_header(b"x-custom", text, &mut out));
    assert!(out.starts_with(b"Bearer [redacted:"), "{out:?}");
    assert_eq!(
        out.len(),
        b"Bearer ".len() + 19 + b" ".len() + 19,
        "{out:?}"
    );
}

/// Percent-encoded secrets, in any mix of escaped and literal bytes and either hex case, in
/// every place a target, a query or a header carries them: masked over the escaped bytes.
#[test]
fn percent_encoded_secrets_are_masked_where_they_stand() {
    let r = redactor();
    let enc = |s: &str, every: usize, upper: bool| -> String {
        s.bytes()
            .enumerate()
            .map(|(i, b)| {
                if i % every == 0 {
                    if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    }
                } else {
                    (b as char).to_string()
                }
            })
            .collect()
    };
    for secret in [UPSTREAM_KEY, UPSTREAM_OPAQUE, CLIENT_OPAQUE, RGT, OAT] {
        for (every, upper) in [(1, true), (1, false), (2, true), (3, false), (7, true)] {
            let e = enc(secret, every, upper);
            let presented = [CLIENT_OPAQUE.as_bytes()];
            for (what, text) in [
                ("target", format!("GET /v1/{e}/x?q=1 HTTP/1.1")),
                ("target", format!("/v1/models?note={e}&b=2")),
                ("target", format!("/v1/models?b=2#frag-{e}")),
                ("args", format!("a=1&note={e}")),
                ("x-custom", format!("see {e} here")),
                ("referer", format!("https://x.example/?from={e}")),
            ] {
                let text = text.as_bytes();
                let m = r.for_request(&presented);
                let out = mask(|o| mask_as(what, &m, text, o), text);
                let shown = String::from_utf8_lossy(&out);
                let text = String::from_utf8_lossy(text);
                assert!(shown.contains("[redacted:"), "{what}: {text} -> {shown}");
                let public = super::patterns::public_prefix_len(secret.as_bytes());
                for piece in shown.split("[redacted:") {
                    let decoded = super::decoded::Decoded::new(piece.as_bytes())
                        .map(|d| d.bytes.to_vec())
                        .unwrap_or_default();
                    for w in secret.as_bytes()[public..].windows(12) {
                        assert!(
                            !piece.as_bytes().windows(12).any(|x| x == w)
                                && !decoded.windows(12).any(|x| x == w),
                            "{what}: {text} -> {shown}"
                        );
                    }
                }
            }
        }
    }
}

/// Static tokens in the documented `rgs1_` form, and relay-guard prefixes in any case, are
/// masked without being presented; only the prefix stays.
#[test]
fn static_tokens_and_relay_prefixes_in_any_case() {
    let r = Redactor::new(&RedactConfig::with_defaults(), KEY);
    let tok = "rgs1_Q9x-zzTopStatic_Token0123456789abcdefGHIJKL";
    for v in [
        tok.to_string(),
        tok.to_ascii_uppercase(),
        RGT.to_ascii_uppercase(),
    ] {
        let out = header(&r, "user-agent", &format!("ua {v} end"), &[]);
        assert!(
            out.starts_with(&format!("ua {}[redacted:", &v[..5])),
            "{out}"
        );
        assert!(out.ends_with("] end"), "{out}");
    }
}

/// A copy nginx lower-cased (`$host`, a `map` of it, a `server_name` capture): literals are
/// found in any case there, and `$host` also gets what masking the Host header finds, cut
/// where nginx cut it.
#[test]
fn lower_cased_copies_are_masked_in_any_case() {
    let r = redactor();
    let presented = CLIENT_OPAQUE.as_bytes();
    let lower = format!("{}.relay.example", CLIENT_OPAQUE.to_ascii_lowercase());
    let m = r.for_request(std::slice::from_ref(&presented));
    let mut out = Vec::new();
    assert!(!m.mask_target(lower.as_bytes(), &mut out));
    assert!(m.mask_target_folded(lower.as_bytes(), &mut out));
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("{}.relay.example", fp(&CLIENT_OPAQUE.to_ascii_lowercase()))
    );
    // A Host of an opaque upstream key with a colon inside: `$host` holds only the part
    // before the colon, which alone is no literal.
    let key = UPSTREAM_OPAQUE;
    let source = format!("{}:{}", &key[..20], &key[20..]);
    let r2 = {
        let mut cfg = RedactConfig::with_defaults();
        cfg.add_literal(source.as_bytes());
        Redactor::new(&cfg, KEY)
    };
    let image = source[..20].to_ascii_lowercase();
    let m2 = r2.for_request(&[]);
    assert!(m2.mask_host(source.as_bytes(), image.as_bytes(), &mut out));
    assert_eq!(String::from_utf8_lossy(&out), fp(&image));
    // A clean Host stays as nginx made it.
    assert!(!m2.mask_host(b"Relay.Example.COM:8443", b"relay.example.com", &mut out));
}

#[test]
fn whole_values_keep_only_a_public_prefix() {
    let r = redactor();
    let m = r.for_request(&[]);
    let mut out = Vec::new();
    assert!(m.mask_whole(UPSTREAM_KEY.as_bytes(), &mut out));
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("sk-ant-api03-{}", fp(&UPSTREAM_KEY[13..]))
    );
    assert!(m.mask_whole(b"short", &mut out));
    assert_eq!(String::from_utf8_lossy(&out), fp("short"));
    assert!(!m.mask_whole(b"", &mut out));
}

/// An error-log line nginx cut at its buffer's end may end in the first bytes of a literal:
/// those are masked too, down to MIN_LITERAL_LEN of them; a whole literal or a pattern as usual.
#[test]
fn a_literal_cut_at_the_end_of_a_text_is_masked() {
    let r = redactor();
    let presented = [CLIENT_OPAQUE.as_bytes()];
    let masked = |text: &str, cut: bool| -> Option<String> {
        let m = r.for_request(&presented);
        let mut out = Vec::new();
        let done = if cut {
            m.mask_text_cut(text.as_bytes(), &[text.len()], &mut out)
        } else {
            m.mask_text(text.as_bytes(), &mut out)
        };
        done.then(|| String::from_utf8_lossy(&out).into_owned())
    };
    for k in [MIN_LITERAL_LEN, 20, CLIENT_OPAQUE.len() - 1] {
        let text = format!("open() \"/p/{}", &CLIENT_OPAQUE[..k]);
        assert_eq!(masked(&text, false), None, "{text}");
        assert_eq!(
            masked(&text, true),
            Some(format!("open() \"/p/{}", fp(&CLIENT_OPAQUE[..k])))
        );
    }
    let short = format!("x /p/{}", &CLIENT_OPAQUE[..MIN_LITERAL_LEN - 1]);
    assert_eq!(masked(&short, true), None);
    let whole = format!("x {CLIENT_OPAQUE} y {}", &UPSTREAM_OPAQUE[..10]);
    assert_eq!(
        masked(&whole, true),
        Some(format!(
            "x {} y {}",
            fp(CLIENT_OPAQUE),
            fp(&UPSTREAM_OPAQUE[..10])
        ))
    );
    // nginx cuts a message that leaves no room for the error code and marks the cut `...`.
    let mid = format!(
        "open() \"/p/{}... (36: File name too long)",
        &CLIENT_OPAQUE[..15]
    );
    let at = mid.find("...").unwrap_or(0);
    let m = r.for_request(&presented);
    let mut out = Vec::new();
    assert!(m.mask_text_cut(mid.as_bytes(), &[at, mid.len()], &mut out));
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!(
            "open() \"/p/{}... (36: File name too long)",
            fp(&CLIENT_OPAQUE[..15])
        )
    );
}

/// The fuzzer's second finding: a presented credential holding `[` (` rgs1_[r`) did not occur in
/// the text, but a kept `rgs1_` followed by the mask written after it does; masking the output
/// again masked that. A match across a mask's edge is of the mask, never the secret.
#[test]
fn a_literal_made_by_a_kept_prefix_and_a_mask_is_not_masked_again() {
    super::check_fuzz_input(b" rgs1_[r\xffe:80 rgs1_Q9x-ztok [re");
    super::check_fuzz_input(b"abcdefghijrgs1_[r\xffxabcdefghijrgs1_Q9x-ztok y");
    let artifact = include_bytes!("../fuzz/corpus/redact/literal-made-by-a-kept-prefix-and-a-mask");
    super::check_fuzz_input(artifact);
}

/// The fuzzer's third finding: a presented credential across the `#` that ends a query made
/// the `#` part of a mask, so masking the output again read a longer query (up to the next
/// space) and masked more. The `#` (or space) stays, as the `?` does.
#[test]
fn a_literal_across_the_end_of_the_query_leaves_it_in_place() {
    super::check_fuzz_input(
        b"x?abczgs0#\0earer\xc909\xffBear es?key=ShZZKx?abczgs0#\0earer\xc909\xff\0;\0d T /v",
    );
    let artifact = include_bytes!("../fuzz/corpus/redact/literal-across-the-query-end");
    super::check_fuzz_input(artifact);
    let r = redactor();
    let lit: &[u8] = b"opaque-token#fragment-part";
    let m = r.for_request(std::slice::from_ref(&lit));
    let mut out = Vec::new();
    let text: &[u8] = b"/p?a=1&q=opaque-token#fragment-part;x";
    assert!(m.mask_target(text, &mut out));
    let shown = String::from_utf8_lossy(&out).into_owned();
    assert!(shown.starts_with("/p?a=1&q=[redacted:"), "{shown}");
    assert_eq!(shown.matches('#').count(), 1, "{shown}");
    assert!(shown.ends_with("];x"), "{shown}");
}

/// The fuzzer's fourth finding: `Bearer rgs1_` then a `\n` (an empty token: the prefix is all
/// of it) with a literal covering the `\n`. No span, so nothing read on; the masked text then
/// read a token there. Empty delimited secrets count too, and the same for `key=` and `a=`.
#[test]
fn an_empty_delimited_secret_before_a_covered_delimiter_reads_on() {
    super::check_fuzz_input(b"Bear\x98\x8d Bearer rgs1_\n\0\0\0\xffx Bearer rgs1_\n\0\0\0+fx");
    super::check_fuzz_input(b"&zz12345q\xffkey=&zz12345qyy&b=1");
    super::check_fuzz_input(b"; bxxxxxxx\xffa=; bxxxxxxx=1 c");
    let artifact = include_bytes!("../fuzz/corpus/redact/empty-token-before-a-covered-delimiter");
    super::check_fuzz_input(artifact);
}
