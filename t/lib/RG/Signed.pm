package RG::Signed;
# The `--- signed` block section: a signed request described once. Its text is a Perl list of
# options, evaluated in package main when the block is about to run:
#     --- signed: body => $::B1K, target => '/v1/messages?beta=true', recorded => 1
# expand() turns it into the block's --- request (or --- pipelined_requests) and
# --- more_headers, so the request line, the body and the signature headers come from one
# description with one nonce and timestamp. A file registers it next to its own preprocessor:
#     add_block_preprocessor(\&RG::Signed::expand);
# (Test::Nginx runs every registered preprocessor on every block), or calls it from its own.
#
# The options: what is sent (method, target, body; target defaults to /v1/messages, method to
# POST with a body and GET without one), what is signed when it must differ (sign_method,
# sign_target, sign_body), the signing inputs of RG::sign_headers (key_id, secret, timestamp,
# skew, nonce, override, drop), and how the request is sent: times => N (the same request N
# times, for replays), pipelined => 1 (on one connection), recorded => 1 (between a mock reset
# and a fetch of its record).
# An unknown option fails the block: a misspelt one would otherwise sign something else.
use strict;
use warnings;
use RG ();

my %SIGNING = map { $_ => 1 } qw(key_id secret timestamp skew nonce override drop);
my %OWN = map { $_ => 1 } qw(method target body sign_method sign_target sign_body
                             times pipelined recorded);

# The sections expand() writes; a block that sets one itself and --- signed is ambiguous.
my @WRITES = qw(request pipelined_requests more_headers raw_request);

sub options {
    my ($block) = @_;
    my @raw = $block->signed;
    my $where = 'block "' . $block->name . '": --- signed';
    die "$where: write the options as plain text (the section is evaluated here, not with eval)\n"
        if @raw != 1 || ref $raw[0];
    my @list = eval "package main; no strict; ($raw[0])";
    die "$where does not evaluate: $@" if $@;
    die "$where: an odd number of items, want name => value pairs\n" if @list % 2;
    my %o = @list;
    my @unknown = sort grep { !$SIGNING{$_} && !$OWN{$_} } keys %o;
    die "$where: unknown option(s) @unknown\n" if @unknown;
    die "$where: times must be a whole number of at least 1\n"
        if defined $o{times} && $o{times} !~ /\A[1-9][0-9]*\z/;
    die "$where: pipelined and recorded do not combine\n" if $o{pipelined} && $o{recorded};
    return \%o;
}

# Block preprocessor: a no-op for blocks without --- signed.
sub expand {
    my ($block) = @_;
    return unless defined $block->signed;
    my $o = options($block);
    for my $s (@WRITES) {
        die 'block "' . $block->name . "\": --- signed and --- $s both given\n"
            if defined $block->$s;
    }
    my $body = $o->{body} // '';
    my $target = $o->{target} // '/v1/messages';
    my $method = $o->{method} // ($body eq '' ? 'GET' : 'POST');
    my %sign = map { $_ => $o->{$_} } grep { $SIGNING{$_} } keys %$o;
    my $headers = RG::sign_headers(%sign,
        method => $o->{sign_method} // $method,
        target => $o->{sign_target} // $target,
        body   => $o->{sign_body} // $body);
    my @requests = ("$method $target\n$body") x ($o->{times} // 1);
    @requests = ('POST /__mock/reset', @requests, 'GET /__mock/record') if $o->{recorded};
    # Test::Nginx passes a block whose --- error_code lists more codes than it sends requests
    # (the surplus checks are skipped), so a request list that lost its mock calls would pass.
    my $codes = $block->error_code;
    die 'block "' . $block->name . '": --- signed sends ' . @requests . ' requests but'
        . ' --- error_code lists ' . @$codes . "\n"
        if ref $codes eq 'ARRAY' && @$codes != @requests;
    my $section = $o->{pipelined} ? 'pipelined_requests' : 'request';
    # A single request stays a string, so its --- error_code and the like stay scalars too.
    $block->set_value($section => @requests == 1 ? $requests[0] : \@requests);
    $block->set_value(more_headers => $headers);
    return;
}

1;
