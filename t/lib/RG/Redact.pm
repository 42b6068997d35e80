package RG::Redact;
# Helpers for the redaction tests (t/04x-redact*.t): a corpus of secrets, a directory outside
# the servroot for the log files (Test::Nginx wipes servroot/logs at every block), and a leak
# check that looks for every 12-byte window of every secret in a log file. Core Perl only.
use strict;
use warnings;
use File::Temp ();
use MIME::Base64 ();
use Test::More ();
use RG;

our $WINDOW = 12;

# A directory for the access and error logs of one test file, kept until the process exits.
# Exported to the nginx configuration as $TEST_NGINX_REDACT_DIR.
my $DIR;
sub log_dir {
    return $DIR //= do {
        my $d = File::Temp::tempdir('rg-redact-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{REDACT_KEEP});
        chmod 0755, $d;
        $ENV{TEST_NGINX_REDACT_DIR} = $d;
        # An upstream key that matches no pattern: only the literal matcher can mask it.
        my $f = "$d/literal-upstream-key";
        open my $fh, '>', $f or die "$f: $!";
        print $fh "corp-gateway-key-7Pq3Rs9Tu2Vw6Xy0Za4\n";
        close $fh;
        chmod 0600, $f;
        $d;
    };
}

# The corpus. Each value is a secret: no 12-byte window of it (other than one lying wholly in
# its public prefix, `sk-ant-<kind>-` or `rgt1.`) may appear in a log line. Values are chosen
# so that no window occurs in the log for an innocent reason.
our %S = (
    api03      => 'sk-ant-api03-Zq8Vw1Lr7Tb4Nc0Xe5Hy2Ju6Ki9Om3Pa1Sd4Fg7Hj0Kl2Zx5Cv8Bn1Mq4Wr7Ty0Ui3Op6As9Df2Gh5Jk8-Lq3AA',
    admin01    => 'sk-ant-admin01-Ad7Mn2Bv5Cx8Zl1Kj4Hg7Fd0Sa3Qw6Er9Ty2Ui5Op8Ij1Uh4Yg7Tf0Rd3Es6Wa9-Qz2BB',
    oat01      => 'sk-ant-oat01-Oa4Tk9Lm2Nb7Vc1Xz5Qp8Wo3Ei6Ru0Ty4Yu7Ih1Gf5Dr8Se2Aw6Qs9Zx3Cv7Bn0-Mk4CC',
    ort01      => 'sk-ant-ort01-Rf3Eg8Th1Yj6Uk9Il2Om5Pn0Qb4Wc7Ev1Rx5Tz8Yq2Ua6Is9Od3Pf7Ag0Sh4Dj8-Kl1DD',
    ua_key     => 'sk-ant-api03-UserAgentPasted7Gh2Jk5Lm8Nb1Vc4Xz7Qw0Er3Ty6Ui9Op2As5Df8-Gh1EE',
    path_key   => 'sk-ant-api03-PathSegment9Kx2Lw5Mv8Nu1Ot4Ps7Qr0Rq3Sp6To9Un2Vm5Wl8Xk1-Yj4FF',
    static     => $RG::STATIC_TOKEN,
    upstream   => $RG::UPSTREAM_KEY,
    sig_hex    => '9f3c2a7b41d08e65c7f1a2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7',
    cookie     => 'CookieVal7Hq2Wm9Xp4Zr1Ts6Uv3Yb8',
    cookie2    => 'SecondCookie5Nd8Rf1Tg4Yh7Uj0',
    proxy_b64  => MIME::Base64::encode_base64('proxyuser:ProxyPassw0rd-9Zt4Kq7Lm', ''),
    q_key      => 'QueryKey4Ab8Cd2Ef6Gh0Ij3Kl7',
    q_key2     => 'QueryKeyRepeat9Mn1Op5Qr8St2',
    q_api_key  => 'QueryApiKey3Uv7Wx1Yz5Ab9Cd4',
    q_apikey   => 'QueryApikeyGlued6Ef0Gh4Ij8',
    q_token    => 'QueryToken2Kl6Mn0Op4Qr8St1',
    q_access   => 'QueryAccess7Uv1Wx5Yz9Ab3Cd',
    q_sig      => 'QuerySignature5Ef9Gh3Ij7Kl1',
    q_sig2     => 'QuerySig8Mn2Op6Qr0St4Uv7',
    q_pct      => 'Pct%2DEncoded%2FValue%3D1Wx5Yz9',
    q_pctname  => 'EncodedName0Ab4Cd8Ef2Gh6',
    ref_token  => 'RefererToken3Ij7Kl1Mn5Op9',
    custom     => 'CustomSecret8Qr2St6Uv0Wx4',
    session    => 'SessionId1Yz5Ab9Cd3Ef7Gh',
    bearer_x   => 'BearerInOtherHeader6Ij0Kl4Mn8',
    literal_up => 'corp-gateway-key-7Pq3Rs9Tu2Vw6Xy0Za4',
    rgt        => RG::mint(ttl => 3600),
);

# The bytes of $v that may stay readable.
sub public_prefix {
    my ($v) = @_;
    return $1 if $v =~ /\A(sk-ant-[a-z0-9]{1,12}-)/;
    return 'rgt1.' if $v =~ /\Argt1\./;
    return '';
}

# Every 12-byte window of $v except those inside its public prefix.
sub windows {
    my ($v) = @_;
    my $skip = length public_prefix($v);
    my @w;
    for my $i (0 .. length($v) - $WINDOW) {
        next if $i + $WINDOW <= $skip;
        push @w, substr($v, $i, $WINDOW);
    }
    return @w;
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    local $/;
    my $t = <$fh>;
    close $fh;
    return $t;
}

# Lines of $text holding a window of one of the named secrets, as "secret: line" strings.
sub leaks {
    my ($text, @names) = @_;
    @names = sort keys %S unless @names;
    my @found;
    my @lines = split /\n/, $text;
    for my $n (@names) {
        my %seen;
        for my $w (windows($S{$n})) {
            for my $l (@lines) {
                next if index($l, $w) < 0 || $seen{$l}++;
                push @found, "$n ($w): $l";
            }
        }
    }
    return @found;
}

# Test: the file exists, holds at least $min_lines lines matching $line_re (so logging really
# happened), masks, and no window of any secret.
sub no_leaks_in {
    my ($file, %a) = @_;
    my $name = $a{name} // $file;
    my $text = slurp($file);
    Test::More::ok(defined $text, "$name: log file written") or return;
    my $re = $a{lines} // qr/./;
    my $n = () = $text =~ /^.*$re.*$/mg;
    Test::More::cmp_ok($n, '>=', $a{min_lines} // 1, "$name: $n log lines of this test");
    Test::More::like($text, qr/\[redacted:[0-9a-f]{8}\]/, "$name: masks are present");
    my @l = leaks($text, @{ $a{secrets} || [] });
    Test::More::is(scalar(@l), 0, "$name: no 12-byte slice of any secret")
        or Test::More::diag(join "\n", map { "  leak: $_" } @l[0 .. ($#l < 20 ? $#l : 19)]);
}

1;
