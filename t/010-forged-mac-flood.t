# A flood of forged signed requests (a known key id, fresh timestamps, distinct nonces, wrong
# MACs) many times the nonce store's capacity never takes a slot: the MAC is checked before the
# nonce is stored (README, wire protocol). This file fails if that order ever changes: the
# flood would fill the store, the valid request after it would get 503, and a forged request
# against a full store would get 503 STORE_FULL instead of 401 BAD_SIGNATURE.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time);
use RG;
use RG::Server;
use RG::Load;
use RG::Metrics ();

my $data = $ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';
my $FLOOD = $ENV{RG_FLOOD} // 15000;    # the smallest zone holds 1,280 nonces

my $up = RG::Server::free_port();
my $http = RG::Load::relay_conf(upstream => $up, data => $data, zone => 'rg_tiny:40k keys=1 models=1',
                                mode => 'signature');

my $t0 = time;
my $srv = RG::Server->new(name => 'forged', workers => 2);
$srv->start($http);
my $port = $srv->port;

sub status_of { RG::Load::status_of(@_) }
sub tally { my %t; $t{ status_of($_) }++ for @{ $_[0] }; \%t }
sub show { my ($t) = @_; join ', ', map { "$_ x$t->{$_}" } sort keys %$t }
sub outcome_total {
    my ($m, $outcome) = @_;
    my $sum = 0;
    $sum += $m->{$_} for grep { /^relay_guard_auth_total\{.*outcome="\Q$outcome\E"/ } keys %$m;
    return $sum;
}

# Forged the two ways an attacker without the secret can: a made-up MAC (GET), and a real
# request's MAC over a body other than the one sent (POST).
sub forged {
    my ($i) = @_;
    if ($i % 2) {
        my $h = RG::sign_headers(method => 'GET', target => '/v1/models',
                                 override => { 'X-Signature' => sprintf('%064x', $i) });
        return RG::Load::head('GET', '/v1/models', $h, undef);
    }
    my $signed = RG::Load::signed_request(body => '{"n":1}')->{bytes};
    $signed =~ s/\{"n":1\}\z/{"n":2}/ or die;
    return $signed;
}

my $m0 = RG::Metrics::snap($srv);
my $flood = RG::Load::pipeline($port, [map { forged($_) } 1 .. $FLOOD]);
my $ft = tally($flood);
diag(sprintf '%d forged requests in %.1f s: %s', $FLOOD, time - $t0, show($ft));
is($ft->{'401 BAD_SIGNATURE'} // 0, $FLOOD, "all $FLOOD forged requests: 401 BAD_SIGNATURE");
my $m1 = RG::Metrics::snap($srv);
is(outcome_total($m1, 'BAD_SIGNATURE') - outcome_total($m0, 'BAD_SIGNATURE'), $FLOOD,
   '... each counted as BAD_SIGNATURE');
is(outcome_total($m1, 'STORE_FULL'), 0, 'no STORE_FULL counted');
unlike($srv->error_log, qr/the nonce store is full/, 'no "store full" warning');

my $valid = RG::Load::signed_request();
is(status_of(RG::Load::once($port, $valid->{bytes})), '200 OK', 'a valid signed request after the flood: 200');

# Now fill the store with valid requests: it holds as many as an empty store does.
my ($accepted, $full) = (1, undef);
while (!$full && $accepted < 5 * $FLOOD) {
    my $batch = RG::Load::pipeline($port, [map { RG::Load::signed_request()->{bytes} } 1 .. 50]);
    for (@$batch) {
        if (status_of($_) eq '200 OK') { $accepted++; next }
        $full = $_;
        last;
    }
}
is(status_of($full // {}), '503 STORE_FULL', "then the store filled, after $accepted valid requests");
my ($capacity) = $srv->error_log =~ /the nonce store is full \((\d+) live nonces\)/;
ok($capacity, "the warning gives its capacity: $capacity slots");
cmp_ok($FLOOD, '>=', 10 * ($capacity // 1e9), 'the flood was more than ten times the capacity');
cmp_ok($accepted, '>=', 0.8 * ($capacity // 1e9), 'the valid requests found it empty: '
       . sprintf('%.0f %% of the slots filled before the first refusal', 100 * $accepted / ($capacity || 1)));

# With the store full, a forged request is still judged by its MAC first.
my $again = tally(RG::Load::pipeline($port, [map { forged($_) } 1 .. 200]));
is($again->{'401 BAD_SIGNATURE'} // 0, 200, 'forged requests against a full store: 401 BAD_SIGNATURE, not 503')
    or diag(show($again));
# Full means both candidate buckets of one nonce were full: other new nonces may still find a
# slot, and each one admitted fills the store further. So valid requests keep going (a bounded
# number of batches) until the store refuses one; every answer on the way is 200 or 503.
my (%valid_now, $batches);
while (!$valid_now{'503 STORE_FULL'} && ++$batches <= 40) {
    my $t = tally(RG::Load::pipeline($port, [map { RG::Load::signed_request()->{bytes} } 1 .. 50]));
    $valid_now{$_} += $t->{$_} for keys %$t;
}
my $answers = 0;
$answers += $valid_now{$_} for keys %valid_now;
ok($valid_now{'503 STORE_FULL'}
   && $valid_now{'503 STORE_FULL'} + ($valid_now{'200 OK'} // 0) == $answers,
   "... while valid ones meet the full store (200 while a slot is left, then 503), in $batches batch(es): "
   . show(\%valid_now));
is(status_of(RG::Load::once($port, $valid->{bytes})), '401 REPLAY',
   '... and a replay of an admitted one 401 REPLAY (no live nonce was evicted)');
$srv->stop;
diag(sprintf 'took %.1f s', time - $t0);
done_testing();
