package RG::Metrics;
# Helpers for the metrics tests (t/03x-metrics*.t), on top of RG::Server: scrape the
# relay_guard_metrics endpoint, read values out of the exposition, diff two scrapes, and run
# scripts/check_prometheus.py (prometheus_client's parser plus histogram invariants) on it.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempfile);
use Time::HiRes qw(time);
use RG;

our $ROOT = File::Spec->rel2abs(dirname(__FILE__) . '/../../..');
our $PYTHON = $ENV{RG_PYTHON} // "$ROOT/target/venv/bin/python";
our $CHECKER = "$ROOT/scripts/check_prometheus.py";

# Undoes Transfer-Encoding: chunked (RG::Server::request returns the raw body).
sub dechunk {
    my ($r) = @_;
    return $r->{body} unless ($r->{headers}{'transfer-encoding'} // '') =~ /chunked/i;
    return RG::dechunk($r->{body});
}

# GET the metrics endpoint. Returns (response with a de-chunked body, seconds taken).
sub scrape {
    my ($srv, $path) = @_;
    my $t0 = time;
    my $r = $srv->request('GET', $path // '/metrics');
    my $dt = time - $t0;
    $r->{body} = dechunk($r);
    die "scrape of " . ($path // '/metrics') . " answered $r->{status}: " . substr($r->{body}, 0, 300) . " headers: " . join(" ", %{ $r->{headers} })
        unless $r->{status} == 200;
    return wantarray ? ($r, $dt) : $r;
}

# Canonical series id: name{a="x",b="y"} with labels sorted by name.
sub series_id {
    my ($name, %l) = @_;
    return $name unless %l;
    return $name . '{' . join(',', map { qq{$_="$l{$_}"} } sort keys %l) . '}';
}

# Parses exposition text into { series id => value }. Label values here never hold commas,
# quotes or escapes (the tests choose the key ids), so a simple split is enough.
sub parse {
    my ($text) = @_;
    my %m;
    for my $line (split /\n/, $text) {
        next if $line =~ /^#/ || $line !~ /\S/;
        my ($name, $labels, $v) = $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/
            or die "unparsable exposition line: $line";
        my %l = map { /^(\w+)="(.*)"$/ ? ($1 => $2) : die "bad label in $line" }
                split /,(?=\w+=")/, $labels // '';
        $m{series_id($name, %l)} = $v;
    }
    return \%m;
}

# One metrics snapshot: scrape and parse.
sub snap { parse(scrape(@_)->{body}) }

# Value of a series in a parsed snapshot (0 when absent: zero series are not exported).
sub val {
    my ($m, $name, %l) = @_;
    return $m->{series_id($name, %l)} // 0;
}

# after - before for one series.
sub delta {
    my ($before, $after, $name, %l) = @_;
    return val($after, $name, %l) - val($before, $name, %l);
}

# Every series id starting with $prefix whose value changed between two snapshots.
sub changed {
    my ($before, $after, $prefix) = @_;
    my %ids = (%$before, %$after);
    return { map { $_ => val($after, $_) - val($before, $_) }
             grep { index($_, $prefix) == 0 && ($before->{$_} // 0) != ($after->{$_} // 0) }
             keys %ids };
}

# Runs scripts/check_prometheus.py on $text. Returns (exit code, combined output).
sub check_exposition {
    my ($text, @require) = @_;
    my ($fh, $file) = tempfile(UNLINK => 1);
    print $fh $text;
    close $fh;
    my @args = map { ('--require', $_) } @require;
    my $out = `'$PYTHON' '$CHECKER' @args < '$file' 2>&1`;
    return ($? >> 8, $out);
}

# Request helpers. Token auth (team-a by default), signature auth (alice or bob).
sub token_headers {
    my ($token, %extra) = @_;
    $token //= $RG::STATIC_TOKEN;
    return "Authorization: Bearer $token\n" . join('', map { "$_: $extra{$_}\n" } sort keys %extra);
}

our %SECRETS = (alice => 'alice-secret-0123456789', bob => 'bob-secret-0123456789ab');

sub signed_headers {
    my ($key, $method, $target, $body, %extra) = @_;
    return RG::sign_headers(key_id => $key, secret => $SECRETS{$key}, method => $method,
                            target => $target, body => $body // '')
         . join('', map { "$_: $extra{$_}\n" } sort keys %extra);
}

# A Messages API body asking for a stream.
sub stream_body {
    return '{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,'
         . '"messages":[{"role":"user","content":"hi"}]}';
}

1;
