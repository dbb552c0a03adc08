# Drives an ACME server with Ruby's acme-client gem (Debian's ruby-acme-client), the client
# GitLab uses for its Let's Encrypt integration. Used by conformance/acme-tiny-ruby.sh.
#
#   ruby acme-client.rb issue <account-key.pem> <cert.pem> <name>…
#       Registers an ES256 account (P-256 key, made and saved when the file does not exist),
#       orders <name>…, answers every http-01 challenge from WEBrick on
#       127.0.0.1:$HTTP01_PORT, finalizes with a CSR made by the gem
#       (Acme::Client::CertificateRequest, its default RSA-2048 key) and writes the
#       certificate chain to <cert.pem> (and the CSR's key to <cert.pem>.key). A CSR refused as badCSR for its version (see
#       below) is reported and sent again as version 0.
#   ruby acme-client.rb revoke <account-key.pem> <cert.pem> <reason code>
#       Finds the account of the key (newAccount onlyReturnExisting) and revokes the first
#       certificate of <cert.pem> with it.
#   ruby acme-client.rb untrusted
#       Reads the directory without the CA bundle: must fail certificate verification.
#
# Environment: ACME_DIRECTORY (directory URL), CA_BUNDLE (PEM the HTTPS connection trusts),
# HTTP01_PORT. TLS verification stays on (Faraday's default); the bundle is added through
# the gem's connection_options.
require 'acme-client'
require 'webrick'
require 'openssl'

DIRECTORY = ENV.fetch('ACME_DIRECTORY')

def client(key, trust: true)
  ssl = { verify: true }
  ssl[:ca_file] = ENV.fetch('CA_BUNDLE') if trust
  Acme::Client.new(private_key: key, directory: DIRECTORY, connection_options: { ssl: ssl })
end

def say(line)
  $stdout.puts(line)
  $stdout.flush
end

# poll { status } — calls the block until it returns a status other than pending/processing.
def poll(what)
  deadline = Time.now + 30
  loop do
    status = yield
    return status unless %w[pending processing].include?(status)
    raise "#{what} still #{status} after 30 s" if Time.now > deadline

    sleep 0.25
  end
end

def account_key(path)
  return OpenSSL::PKey.read(File.read(path)) if File.exist?(path)

  # acme-client before 2.0.18 writes the JWK's x and y without their leading zero bytes,
  # which RFC 7518 §6.2.1.2 forbids and rampart (like Boulder) refuses; one P-256 key in
  # 128 has such a coordinate, so take one that has none.
  key = nil
  loop do
    key = OpenSSL::PKey::EC.generate('prime256v1')
    point = key.public_key.to_octet_string(:uncompressed)
    break unless point.getbyte(1).zero? || point.getbyte(33).zero?
  end
  File.write(path, key.to_pem)
  key
end

def issue(key_path, cert_path, names)
  acme = client(account_key(key_path))
  account = acme.new_account(contact: 'mailto:ruby@example.org', terms_of_service_agreed: true)
  say "account #{account.kid} status=#{account.status} contact=#{account.contact.join(',')}"

  order = acme.new_order(identifiers: names)
  say "order #{order.url} status=#{order.status} authorizations=#{order.authorization_urls.size}"

  # The http-01 responder: WEBrick answers the tokens of this order, 404 for anything else.
  tokens = {}
  served = Hash.new(0)
  server = WEBrick::HTTPServer.new(BindAddress: '127.0.0.1', Port: Integer(ENV.fetch('HTTP01_PORT')),
                                   Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN), AccessLog: [])
  server.mount_proc('/.well-known/acme-challenge/') do |req, res|
    token = req.path.delete_prefix('/.well-known/acme-challenge/')
    if tokens.key?(token)
      served[token] += 1
      res.content_type = 'text/plain'
      res.body = tokens[token]
    else
      res.status = 404
    end
  end
  thread = Thread.new { server.start }

  begin
    challenges = order.authorizations.map do |authz|
      challenge = authz.http01 or raise "no http-01 challenge for #{authz.domain}"
      tokens[challenge.token] = challenge.file_content
      [authz, challenge]
    end
    challenges.each do |authz, challenge|
      challenge.request_validation
      status = poll("the challenge for #{authz.domain}") do
        challenge.reload
        challenge.status
      end
      raise "http-01 for #{authz.domain} ended #{status}: #{challenge.error.inspect}" unless status == 'valid'

      authz.reload
      raise "authorization for #{authz.domain} is #{authz.status}" unless authz.status == 'valid'

      say "authorization #{authz.domain} valid (WEBrick served its token #{served[challenge.token]} time(s))"
    end
  ensure
    server.shutdown
    thread.join
  end

  csr = Acme::Client::CertificateRequest.new(names: names, subject: { common_name: names.first })
  begin
    order.finalize(csr: csr)
  rescue Acme::Client::Error::BadCSR => e
    # acme-client before 2.0.19 makes PKCS#10 version 2 requests (RFC 2986 knows only
    # version 0, "v1"). Say so, and finalize again with the same request as version 0.
    raise if csr.csr.version.zero?

    say "finalize refused: #{e.class}: #{e.message} (the gem's CSR has version #{csr.csr.version})"
    csr.csr.version = 0
    csr.csr.sign(csr.private_key, OpenSSL::Digest::SHA256.new)
    order.finalize(csr: csr)
  end
  status = poll('the order') do
    order.reload
    order.status
  end
  raise "order ended #{status}" unless status == 'valid'

  File.write(cert_path, order.certificate)
  File.write("#{cert_path}.key", csr.private_key.to_pem)
  say "certificate #{order.certificate_url}"
end

def revoke(key_path, cert_path, reason)
  acme = client(account_key(key_path))
  say "account #{acme.account.kid}"
  certificate = OpenSSL::X509::Certificate.new(File.read(cert_path))
  raise 'revocation not accepted' unless acme.revoke(certificate: certificate, reason: Integer(reason))

  say "revoked #{certificate.serial.to_s(16)}"
end

begin
  case ARGV.shift
  when 'issue' then issue(ARGV.shift, ARGV.shift, ARGV)
  when 'revoke' then revoke(*ARGV)
  when 'untrusted'
    client(OpenSSL::PKey::EC.generate('prime256v1'), trust: false).meta
    raise 'the directory was read without trusting the CA bundle'
  else abort 'usage: acme-client.rb issue|revoke|untrusted …'
  end
rescue Faraday::SSLError, OpenSSL::SSL::SSLError => e
  say "TLS error: #{e.class}: #{e.message}"
  exit 2
rescue Acme::Client::Error, RuntimeError => e
  say "#{e.class}: #{e.message}"
  exit 1
end
