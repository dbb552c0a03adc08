// Drives the npm package acme-client (publishlab/node-acme-client, pinned in package.json)
// against rampart's ACME server for conformance/acme-node.sh, one step per command:
//
//   node acme-client-test.mjs <command> [args…]
//     untrusted                 read the directory without NODE_EXTRA_CA_CERTS (must fail)
//     account                   ES256 account: create, find again, update contacts, roll the
//                               key over to RSA; state saved in $STATE
//     auto-http01 <out> <names…>  client.auto(), http-01 answered by a Node HTTP server
//     auto-tlsalpn01 <out> <name> client.auto(), tls-alpn-01 with acme.crypto.createAlpnCertificate
//     manual-dns01 <out> <names…> createOrder → getAuthorizations → TXT via knsupdate at knotd →
//                               verifyChallenge → completeChallenge → waitForValidStatus →
//                               finalizeOrder → getCertificate
//     wrong-http01 <name>       client.auto() while the token is served with a wrong key
//                               authorization; the order and authorization end invalid
//     revoke <cert> <reason>    revokeCertificate, then again (must fail alreadyRevoked)
//     eab <kid> <hmac> <out> <name>  on the EAB profile: refused without EAB and with a wrong
//                               HMAC, then registers with the key and orders by http-01
//     ari <cert>                the certificate's RFC 9773 renewalInfo, fetched by hand (this
//                               acme-client has no ARI support) through the library's axios
//
// Environment: ACME_DIRECTORY, EAB_DIRECTORY, HTTP01_PORT, TLSALPN01_PORT, DNS_PORT, ZONE,
// TSIG_NAME, TSIG_SECRET, STATE (a directory for the account), NODE_PREFIX (where
// `npm ci` installed package.json's dependencies), NODE_EXTRA_CA_CERTS (rampart's CA bundle).
//
// Output: one fact per line ("key value…"), checked by the shell script. Any failed
// expectation exits 1 with "error: …". Every HTTP response acme-client received is written
// to $STATE/responses.log; a 5xx from rampart fails the command even when acme-client
// retried it successfully.
import { createRequire } from 'node:module';
import dns from 'node:dns';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';

const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`environment variable ${name} is not set`);
    return value;
};
const require = createRequire(path.join(env('NODE_PREFIX'), 'package.json'));
const acme = require('acme-client');
const axios = require('axios');
const x509 = require('@peculiar/x509');

const STATE = env('STATE');
const ZONE = process.env.ZONE || '';
const out = (...words) => console.log(words.join(' '));
const check = (ok, message) => {
    if (!ok) throw new Error(message);
};

// --- Recording transport (a wrapper of axios' http adapter): every response acme-client
// gets, before its retry logic sees it. lastProblem is the last RFC 7807 problem received (a response's own, or the error of
// a challenge object), so a failing call can be checked for its problem type: acme-client's
// errors carry only the detail text.
let lastProblem = null;
let lastNetworkError = null; // a request that got no response (acme-client's own error then
// is a TypeError from its retry interceptor: it validates the missing response)
const serverErrors = [];
const created = []; // [url, Location] of each 201 response
const httpAdapter = axios.getAdapter('http');
function record(response) {
    const { config, status } = response;
    // Raw, as the adapter returns it: axios parses JSON only after the adapter.
    let { data } = response;
    if (typeof data === 'string') {
        try { data = JSON.parse(data); } catch { /* not JSON */ }
    }
    const method = (config.method || 'get').toUpperCase();
    let problem = null;
    if (data && typeof data === 'object') {
        if (typeof data.type === 'string' && data.type.startsWith('urn:ietf:params:acme:error:')) problem = data;
        else if (data.error && typeof data.error.type === 'string') problem = data.error;
    }
    if (problem) lastProblem = { status, url: config.url, type: problem.type, detail: problem.detail || '' };
    if (status === 201 && response.headers.location) created.push([config.url, response.headers.location]);
    if (status >= 500) serverErrors.push(`${status} ${method} ${config.url}: ${JSON.stringify(data)}`);
    fs.appendFileSync(path.join(STATE, 'responses.log'),
        `${status} ${method} ${config.url}${problem ? ` ${problem.type} ${problem.detail || ''}` : ''}${status >= 400 && !problem ? ` ${JSON.stringify(data)}` : ''}\n`);
}
acme.axios.defaults.adapter = async (config) => {
    try {
        const response = await httpAdapter(config);
        record(response);
        return response;
    } catch (error) {
        if (error.response) record(error.response);
        else lastNetworkError = `${error.code || 'error'}: ${error.message}`;
        throw error;
    }
};

// --- Names of the lab zone resolve at knotd (as rampart resolves them), for acme-client's
// own pre-checks: http-01 through axios' lookup, dns-01 through node:dns' resolver.
if (process.env.DNS_PORT) {
    const knot = `127.0.0.1:${process.env.DNS_PORT}`;
    dns.setServers([knot]);
    dns.promises.setServers([knot]);
    const resolver = new dns.promises.Resolver();
    resolver.setServers([knot]);
    acme.axios.defaults.lookup = async (hostname) => {
        if (ZONE && (hostname === ZONE || hostname.endsWith(`.${ZONE}`))) {
            return (await resolver.resolve4(hostname)).map((address) => ({ address, family: 4 }));
        }
        return dns.promises.lookup(hostname, { all: true });
    };
}
if (process.env.HTTP01_PORT) acme.axios.defaults.acmeSettings.httpChallengePort = Number(process.env.HTTP01_PORT);
if (process.env.TLSALPN01_PORT) acme.axios.defaults.acmeSettings.tlsAlpnChallengePort = Number(process.env.TLSALPN01_PORT);

// A client with short polling back-off (acme-client's default starts at 5 s).
const newClient = (directoryUrl, accountKey, extra = {}) => new acme.Client({
    directoryUrl, accountKey, backoffAttempts: 20, backoffMin: 100, backoffMax: 1000, ...extra,
});

// The saved account (from `account`).
function savedClient() {
    return newClient(env('ACME_DIRECTORY'), fs.readFileSync(path.join(STATE, 'account.key')), {
        accountUrl: fs.readFileSync(path.join(STATE, 'account.url'), 'utf8').trim(),
    });
}

// expectFailure(promise, what) — the promise must reject; returns the message and the
// problem rampart sent with it.
async function expectFailure(promise, what) {
    lastProblem = null;
    try {
        await promise;
    } catch (error) {
        return { message: error.message, problem: lastProblem };
    }
    throw new Error(`${what} succeeded`);
}

// --- http-01 responder: tokens by name; a request must name the token's identifier in its
// Host header. Logs each request as "http-01 <host> <user-agent> <status>".
function startHttp01(tokens) {
    const server = http.createServer((req, res) => {
        const match = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url);
        const entry = match && tokens.get(match[1]);
        const host = (req.headers.host || '').replace(/:\d+$/, '');
        const ok = entry && entry.name === host;
        out('http-01', host, JSON.stringify(req.headers['user-agent'] || ''), ok ? 200 : 404);
        res.writeHead(ok ? 200 : 404, { 'Content-Type': 'text/plain' });
        res.end(ok ? entry.body : 'not found');
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(Number(env('HTTP01_PORT')), '127.0.0.1', () => resolve(server));
    });
}

// Writes the chain acme-client returned to <file> and prints how many certificates it holds.
function saveChain(file, chain) {
    const pem = chain.toString();
    fs.writeFileSync(file, pem);
    const count = acme.crypto.splitPemChain(pem).length;
    check(count >= 2, `the chain holds ${count} certificate(s), not the leaf and its issuer(s)`);
    out('certificate', file, 'chain-of', count);
}

// knsupdate <commands> — a TSIG-signed RFC 2136 update at knotd.
function knsupdate(lines) {
    const script = [`server 127.0.0.1 ${env('DNS_PORT')}`, `zone ${ZONE}.`,
        `key hmac-sha256:${env('TSIG_NAME')} ${env('TSIG_SECRET')}`, ...lines, 'send', ''].join('\n');
    execFileSync('knsupdate', [], { input: script, stdio: ['pipe', 'inherit', 'inherit'] });
}

const commands = {
    async untrusted() {
        acme.axios.defaults.acmeSettings.retryMaxAttempts = 0; // no retries 5 s apart
        const client = newClient(env('ACME_DIRECTORY'), await acme.crypto.createPrivateEcdsaKey());
        const { message } = await expectFailure(client.getTermsOfServiceUrl(), 'reading the directory without the CA bundle');
        out('refused', lastNetworkError);
        out('acme-client-error', JSON.stringify(message));
    },

    async account() {
        const directory = env('ACME_DIRECTORY');
        const key = await acme.crypto.createPrivateEcdsaKey('P-256');
        const client = newClient(directory, key);
        const created = await client.createAccount({ termsOfServiceAgreed: true, contact: ['mailto:node@example.org'] });
        const url = client.getAccountUrl();
        check(created.status === 'valid', `new account status ${created.status}`);
        check(JSON.stringify(created.contact) === '["mailto:node@example.org"]', `new account contact ${JSON.stringify(created.contact)}`);
        out('account', url, 'alg', JSON.parse(Buffer.from(client.http.createSignedBody(url).protected, 'base64url')).alg);

        // The same key in a fresh client: newAccount with onlyReturnExisting finds the account.
        const again = newClient(directory, key);
        await again.createAccount({ onlyReturnExisting: true });
        check(again.getAccountUrl() === url, `onlyReturnExisting found ${again.getAccountUrl()}, not ${url}`);
        out('found-again', again.getAccountUrl());

        const contacts = ['mailto:ops@example.org', 'mailto:node-admin@example.org'];
        const updated = await client.updateAccount({ contact: contacts });
        check(JSON.stringify(updated.contact) === JSON.stringify(contacts), `updateAccount answered contact ${JSON.stringify(updated.contact)}`);
        const fetched = await client.updateAccount(); // POST-as-GET of the account
        check(JSON.stringify(fetched.contact) === JSON.stringify(contacts), `the account then reads contact ${JSON.stringify(fetched.contact)}`);
        out('contact', fetched.contact.join(','));

        // Key rollover (RFC 8555 §7.3.5) to RSA: the new key finds the account, the old does not.
        const rsaKey = await acme.crypto.createPrivateRsaKey(2048);
        await client.updateAccountKey(rsaKey);
        const byNewKey = newClient(directory, rsaKey);
        await byNewKey.createAccount({ onlyReturnExisting: true });
        check(byNewKey.getAccountUrl() === url, `the new key finds ${byNewKey.getAccountUrl()}`);
        const { problem } = await expectFailure(newClient(directory, key).createAccount({ onlyReturnExisting: true }),
            'onlyReturnExisting with the rolled-over key');
        out('key-rollover', 'RS256', 'old-key', problem && problem.type);

        fs.writeFileSync(path.join(STATE, 'account.key'), rsaKey);
        fs.writeFileSync(path.join(STATE, 'account.url'), url);
    },

    async 'auto-http01'(file, ...names) {
        const client = savedClient();
        const tokens = new Map();
        const server = await startHttp01(tokens);
        try {
            const [key, csr] = await acme.crypto.createCsr({ commonName: names[0], altNames: names },
                await acme.crypto.createPrivateEcdsaKey('P-256'));
            fs.writeFileSync(`${file}.key`, key);
            const chain = await client.auto({
                csr,
                termsOfServiceAgreed: true,
                challengePriority: ['http-01'],
                challengeCreateFn: async (authz, challenge, keyAuthorization) => {
                    check(challenge.type === 'http-01', `auto picked ${challenge.type}`);
                    out('authz', authz.identifier.value, 'offers', authz.challenges.map((c) => c.type).sort().join(','));
                    tokens.set(challenge.token, { name: authz.identifier.value, body: keyAuthorization });
                },
                challengeRemoveFn: async (authz, challenge) => {
                    tokens.delete(challenge.token);
                },
            });
            saveChain(file, chain);
        } finally {
            server.close();
        }
    },

    async 'auto-tlsalpn01'(file, name) {
        const client = savedClient();
        const certs = new Map();
        const server = tls.createServer({
            ALPNProtocols: ['acme-tls/1'],
            SNICallback: (servername, cb) => {
                const entry = certs.get(servername);
                out('tls-alpn-01', servername, entry ? 'answered' : 'unknown');
                cb(entry ? null : new Error(`no challenge for ${servername}`),
                    entry && tls.createSecureContext({ key: entry.key, cert: entry.cert }));
            },
        }, (socket) => socket.end());
        server.on('tlsClientError', () => {});
        await new Promise((resolve) => server.listen(Number(env('TLSALPN01_PORT')), '127.0.0.1', resolve));
        try {
            const [key, csr] = await acme.crypto.createCsr({ commonName: name },
                await acme.crypto.createPrivateEcdsaKey('P-384'));
            fs.writeFileSync(`${file}.key`, key);
            const chain = await client.auto({
                csr,
                termsOfServiceAgreed: true,
                challengePriority: ['tls-alpn-01'],
                // acme-client's pre-check would connect by name through the system resolver,
                // which does not know the lab zone.
                skipChallengeVerification: true,
                challengeCreateFn: async (authz, challenge, keyAuthorization) => {
                    check(challenge.type === 'tls-alpn-01', `auto picked ${challenge.type}`);
                    const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization,
                        await acme.crypto.createPrivateEcdsaKey());
                    check(acme.crypto.isAlpnCertificateAuthorizationValid(alpnCert, keyAuthorization), 'the ALPN certificate does not hold the key authorization');
                    certs.set(authz.identifier.value, { key: alpnKey, cert: alpnCert });
                },
                challengeRemoveFn: async (authz) => {
                    certs.delete(authz.identifier.value);
                },
            });
            saveChain(file, chain);
        } finally {
            server.close();
        }
    },

    async 'manual-dns01'(file, ...names) {
        const client = savedClient();
        const order = await client.createOrder({ identifiers: names.map((value) => ({ type: 'dns', value })) });
        check(order.status === 'pending', `new order status ${order.status}`);
        const authorizations = await client.getAuthorizations(order);
        check(authorizations.length === names.length, `${authorizations.length} authorizations for ${names.length} names`);
        const pending = [];
        for (const authz of authorizations) {
            out('authz', `${authz.wildcard ? '*.' : ''}${authz.identifier.value}`, 'wildcard', Boolean(authz.wildcard),
                'offers', authz.challenges.map((c) => c.type).sort().join(','));
            const challenge = authz.challenges.find((c) => c.type === 'dns-01');
            check(challenge, `no dns-01 challenge for ${authz.identifier.value}`);
            const value = await client.getChallengeKeyAuthorization(challenge);
            pending.push({ authz, challenge, record: `_acme-challenge.${authz.identifier.value}.`, value });
        }
        knsupdate(pending.map((p) => `update add ${p.record} 60 TXT "${p.value}"`));
        out('txt-added', pending.length);
        try {
            for (const { authz, challenge } of pending) {
                await client.verifyChallenge(authz, challenge); // acme-client's own look-up at knotd
                await client.completeChallenge(challenge);
            }
            for (const { authz, challenge } of pending) {
                const done = await client.waitForValidStatus(challenge);
                check(done.status === 'valid', `challenge status ${done.status}`);
                const valid = await client.waitForValidStatus(authz);
                out('authz-valid', `${valid.wildcard ? '*.' : ''}${valid.identifier.value}`, valid.status);
            }
        } finally {
            knsupdate(pending.map((p) => `update delete ${p.record} TXT "${p.value}"`));
        }
        const ready = await client.waitForValidStatus(order);
        check(ready.status === 'ready', `order status ${ready.status} after all authorizations`);
        const [key, csr] = await acme.crypto.createCsr({ commonName: names[0], altNames: names });
        fs.writeFileSync(`${file}.key`, key);
        const finalized = await client.finalizeOrder(ready, csr);
        out('finalized', finalized.status);
        saveChain(file, await client.getCertificate(finalized));
    },

    async 'wrong-http01'(name) {
        const client = savedClient();
        const tokens = new Map();
        const server = await startHttp01(tokens);
        const seen = [];
        try {
            const [, csr] = await acme.crypto.createCsr({ commonName: name }, await acme.crypto.createPrivateEcdsaKey());
            const { message, problem } = await expectFailure(client.auto({
                csr,
                termsOfServiceAgreed: true,
                challengePriority: ['http-01'],
                skipChallengeVerification: true, // the CA, not acme-client, must find the fault
                challengeCreateFn: async (authz, challenge, keyAuthorization) => {
                    seen.push(authz);
                    // The token with another account's thumbprint.
                    const wrong = `${keyAuthorization.split('.')[0]}.${Buffer.alloc(32, 7).toString('base64url')}`;
                    tokens.set(challenge.token, { name: authz.identifier.value, body: wrong });
                },
                challengeRemoveFn: async (authz, challenge) => tokens.delete(challenge.token),
            }), 'an order whose token is served with a wrong key authorization');
            out('auto-failed', JSON.stringify(message));
            out('problem', problem && problem.type);
        } finally {
            server.close();
        }
        check(seen.length === 1, `challengeCreateFn ran ${seen.length} times`);
        const [authz] = await client.getAuthorizations({ authorizations: [seen[0].url] });
        const challenge = authz.challenges.find((c) => c.type === 'http-01');
        out('authz-status', authz.status, 'challenge', challenge.status, challenge.error && challenge.error.type);
        out('challenge-detail', JSON.stringify((challenge.error && challenge.error.detail) || ''));
        // auto() does not hand out its order: its URL is the Location of the newOrder response.
        const newOrderUrl = await client.http.getResourceUrl('newOrder');
        const orders = created.filter(([url]) => url === newOrderUrl);
        check(orders.length === 1, `${orders.length} orders created`);
        const order = await client.getOrder({ url: orders[0][1] });
        out('order-status', order.status, order.certificate ? 'certificate' : 'no-certificate');
    },

    async revoke(file, reason) {
        const client = savedClient();
        const pem = fs.readFileSync(file);
        await client.revokeCertificate(pem, { reason: Number(reason) });
        out('revoked', reason);
        const { message, problem } = await expectFailure(client.revokeCertificate(pem, { reason: Number(reason) }), 'revoking again');
        out('again', problem && problem.status, problem && problem.type, JSON.stringify(message));
    },

    async eab(kid, hmacKey, file, name) {
        const directory = env('EAB_DIRECTORY');
        const key = await acme.crypto.createPrivateEcdsaKey('P-384');
        const plain = newClient(directory, key);
        check((await plain.http.getMetaField('externalAccountRequired')) === true, 'the directory does not say externalAccountRequired');
        let refused = await expectFailure(plain.createAccount({ termsOfServiceAgreed: true }), 'registering without EAB');
        out('without-eab', refused.problem && refused.problem.status, refused.problem && refused.problem.type);
        const wrongHmac = Buffer.alloc(32, 1).toString('base64url');
        refused = await expectFailure(newClient(directory, key, { externalAccountBinding: { kid, hmacKey: wrongHmac } })
            .createAccount({ termsOfServiceAgreed: true }), 'registering with a wrong EAB HMAC');
        out('wrong-hmac', refused.problem && refused.problem.status, refused.problem && refused.problem.type);

        const client = newClient(directory, key, { externalAccountBinding: { kid, hmacKey } });
        const account = await client.createAccount({ termsOfServiceAgreed: true, contact: ['mailto:eab@example.org'] });
        check(account.status === 'valid', `EAB account status ${account.status}`);
        out('eab-account', client.getAccountUrl(), 'ES384');

        const tokens = new Map();
        const server = await startHttp01(tokens);
        try {
            const [certKey, csr] = await acme.crypto.createCsr({ commonName: name }, await acme.crypto.createPrivateEcdsaKey());
            fs.writeFileSync(`${file}.key`, certKey);
            saveChain(file, await client.auto({
                csr,
                termsOfServiceAgreed: true,
                challengePriority: ['http-01'],
                challengeCreateFn: async (authz, challenge, keyAuthorization) => {
                    tokens.set(challenge.token, { name: authz.identifier.value, body: keyAuthorization });
                },
                challengeRemoveFn: async (authz, challenge) => tokens.delete(challenge.token),
            }));
        } finally {
            server.close();
        }
    },

    async ari(file) {
        const client = savedClient();
        const directory = await client.http.getDirectory();
        check(directory.renewalInfo, 'the directory has no renewalInfo');
        const leaf = new x509.X509Certificate(acme.crypto.splitPemChain(fs.readFileSync(file))[0]);
        const aki = leaf.getExtension(x509.AuthorityKeyIdentifierExtension);
        check(aki && aki.keyId, 'the certificate has no authority key identifier');
        const serial = Buffer.from(leaf.serialNumber.length % 2 ? `0${leaf.serialNumber}` : leaf.serialNumber, 'hex');
        // RFC 9773 §4.1: the serial as DER INTEGER contents (a leading zero when the top bit is set).
        const derSerial = serial[0] & 0x80 ? Buffer.concat([Buffer.from([0]), serial]) : serial;
        const certId = `${Buffer.from(aki.keyId, 'hex').toString('base64url')}.${derSerial.toString('base64url')}`;
        const response = await acme.axios.get(`${directory.renewalInfo.replace(/\/$/, '')}/${certId}`);
        check(response.status === 200, `renewalInfo answered ${response.status}: ${JSON.stringify(response.data)}`);
        const window = response.data.suggestedWindow || {};
        const start = new Date(window.start);
        const end = new Date(window.end);
        check(start < end, `suggestedWindow ${JSON.stringify(window)} is not a window`);
        check(leaf.notBefore < start && end <= leaf.notAfter, `suggestedWindow ${JSON.stringify(window)} is outside the certificate's validity ${leaf.notBefore.toISOString()}–${leaf.notAfter.toISOString()}`);
        out('renewal-window', certId, start.toISOString(), end.toISOString(), 'retry-after', response.headers['retry-after'] || '-');
    },
};

const [command, ...args] = process.argv.slice(2);
if (!commands[command]) {
    console.error(`usage: acme-client-test.mjs ${Object.keys(commands).join('|')} …`);
    process.exit(2);
}
try {
    await commands[command](...args);
    if (serverErrors.length) throw new Error(`rampart answered 5xx: ${serverErrors.join('; ')}`);
} catch (error) {
    console.error(`error: ${error.stack || error}`);
    process.exit(1);
}
