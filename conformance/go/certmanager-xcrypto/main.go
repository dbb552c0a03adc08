// certmanager-xcrypto drives rampart's ACME server with golang.org/x/crypto/acme the way
// cert-manager's ACME issuer does (pkg/acme, pkg/controller/acme{orders,challenges}): an
// RSA-2048 account key (RS256), registration with external account binding against a
// directory that requires it, an order per certificate, http-01 answered by its own solver,
// the certificate taken from CreateOrderCert with bundle=true. It is built by
// conformance/acme-go-libraries.sh (GOPATH mode, Debian's golang-golang-x-crypto-dev).
//
//	certmanager-xcrypto -directory URL -ca ca-bundle.pem -state DIR issue -eab-kid K -eab-hmac H -wrong-hmac W -name N -http01 ADDR
//	certmanager-xcrypto -directory URL -ca ca-bundle.pem -state DIR revoke
//
// issue: registers (checking the refusals on the way: no binding, a wrong HMAC, and a
// second account key presenting the already bound EAB key), orders, validates, finalizes and
// writes DIR/account.key, DIR/cert.pem (the leaf), DIR/chain.pem (the rest of the chain)
// and DIR/cert.key; prints "serial <hex>". revoke: loads the account key as cert-manager
// would after a restart, finds the account (onlyReturnExisting) and revokes DIR/cert.pem
// (reason cessationOfOperation), then revokes it again (x/crypto treats alreadyRevoked as
// success; the trace shows which problem rampart answered).
//
// Every HTTP exchange goes through a recording transport: a 5xx from rampart fails the run
// even when the library's own retries hid it.
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"acmetest"

	"golang.org/x/crypto/acme"
)

const problemPrefix = "urn:ietf:params:acme:error:"

var (
	directory = flag.String("directory", "", "ACME directory URL (EAB required there)")
	caFile    = flag.String("ca", "", "PEM bundle to trust for the directory's TLS certificate")
	stateDir  = flag.String("state", "", "directory for the account key and certificates")
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("certmanager-xcrypto: ")
	flag.Parse()
	if *directory == "" || *caFile == "" || *stateDir == "" || flag.NArg() < 1 {
		log.Fatal("usage: -directory URL -ca FILE -state DIR issue|revoke [flags]")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec := acmetest.NewRecorder(*caFile)
	var err error
	switch flag.Arg(0) {
	case "issue":
		err = issue(ctx, rec, flag.Args()[1:])
	case "revoke":
		err = revoke(ctx, rec)
	default:
		err = fmt.Errorf("unknown command %q", flag.Arg(0))
	}
	rec.Finish(err)
}

// --- HTTP: the recording transport (acmetest), as cert-manager trusts an Issuer's caBundle.

func newClient(rec *acmetest.Recorder, key crypto.Signer) *acme.Client {
	return &acme.Client{
		Key:          key,
		HTTPClient:   rec.Client(),
		DirectoryURL: *directory,
		UserAgent:    "rampart-conformance cert-manager/x-crypto-acme",
	}
}

// wantProblem: err is an ACME problem of the given type (short name).
func wantProblem(err error, typ, what string) error {
	var ae *acme.Error
	if !errors.As(err, &ae) {
		return fmt.Errorf("%s: want an ACME problem %s, got %v", what, typ, err)
	}
	if ae.ProblemType != problemPrefix+typ {
		return fmt.Errorf("%s: want problem %s, got %d %s: %s", what, typ, ae.StatusCode, ae.ProblemType, ae.Detail)
	}
	fmt.Printf("refused %s: %d %s (%s)\n", what, ae.StatusCode, ae.ProblemType, ae.Detail)
	return nil
}

// --- issue

func issue(ctx context.Context, rec *acmetest.Recorder, args []string) error {
	fs := flag.NewFlagSet("issue", flag.ExitOnError)
	kid := fs.String("eab-kid", "", "external account key id")
	hmacKey := fs.String("eab-hmac", "", "external account HMAC key (base64url, as rampart hands it out)")
	wrongHMAC := fs.String("wrong-hmac", "", "a different HMAC key, which must be refused")
	name := fs.String("name", "", "DNS name to order")
	http01 := fs.String("http01", "", "address the http-01 solver listens on")
	_ = fs.Parse(args)
	if *kid == "" || *hmacKey == "" || *wrongHMAC == "" || *name == "" || *http01 == "" {
		return errors.New("issue needs -eab-kid, -eab-hmac, -wrong-hmac, -name and -http01")
	}
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return err
	}

	// cert-manager's default account key: RSA 2048 (JWS RS256).
	accountKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	cl := newClient(rec, accountKey)
	dir, err := cl.Discover(ctx)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	if !dir.ExternalAccountRequired {
		return errors.New("the directory's meta does not say externalAccountRequired")
	}
	fmt.Println("directory: externalAccountRequired = true")

	// No account yet: onlyReturnExisting finds none (cert-manager's GetReg on a new key).
	if _, err := cl.GetReg(ctx, ""); err != acme.ErrNoAccount {
		return fmt.Errorf("GetReg before registration: want ErrNoAccount (accountDoesNotExist), got %v", err)
	}
	contact := []string{"mailto:ops@example.org"}
	// Without a binding, the directory refuses (RFC 8555 §7.3.4).
	_, err = cl.Register(ctx, &acme.Account{Contact: contact}, acme.AcceptTOS)
	if err := wantProblem(err, "externalAccountRequired", "registration without EAB"); err != nil {
		return err
	}
	// cert-manager decodes the Issuer's keySecretRef with base64.RawURLEncoding.
	wrong, err := base64.RawURLEncoding.DecodeString(*wrongHMAC)
	if err != nil {
		return fmt.Errorf("decoding the wrong HMAC key: %w", err)
	}
	_, err = cl.Register(ctx, &acme.Account{Contact: contact,
		ExternalAccountBinding: &acme.ExternalAccountBinding{KID: *kid, Key: wrong}}, acme.AcceptTOS)
	if err := wantProblem(err, "unauthorized", "registration with a wrong EAB HMAC"); err != nil {
		return err
	}
	right, err := base64.RawURLEncoding.DecodeString(*hmacKey)
	if err != nil {
		return fmt.Errorf("decoding the HMAC key: %w", err)
	}
	acct, err := cl.Register(ctx, &acme.Account{Contact: contact,
		ExternalAccountBinding: &acme.ExternalAccountBinding{KID: *kid, Key: right}}, acme.AcceptTOS)
	if err != nil {
		return fmt.Errorf("registration with EAB: %w", err)
	}
	if acct.Status != acme.StatusValid || acct.URI == "" {
		return fmt.Errorf("registered account: status %q, URI %q", acct.Status, acct.URI)
	}
	fmt.Printf("account %s (EAB kid %s)\n", acct.URI, *kid)
	// Registering the same key again is how cert-manager re-finds its account.
	if _, err := cl.Register(ctx, &acme.Account{Contact: contact}, acme.AcceptTOS); err != acme.ErrAccountAlreadyExists {
		return fmt.Errorf("registering the same key again: want ErrAccountAlreadyExists, got %v", err)
	}
	got, err := cl.GetReg(ctx, "")
	if err != nil {
		return fmt.Errorf("GetReg: %w", err)
	}
	if got.URI != acct.URI || len(got.Contact) != 1 || got.Contact[0] != contact[0] {
		return fmt.Errorf("GetReg returned %s %v, registered %s %v", got.URI, got.Contact, acct.URI, contact)
	}
	if err := writeKey(filepath.Join(*stateDir, "account.key"), accountKey); err != nil {
		return err
	}
	// A key binds one account: a second Issuer (another account key) reusing it is refused.
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	_, err = newClient(rec, otherKey).Register(ctx, &acme.Account{Contact: contact,
		ExternalAccountBinding: &acme.ExternalAccountBinding{KID: *kid, Key: right}}, acme.AcceptTOS)
	if err := wantProblem(err, "unauthorized", "a second account with the same EAB key"); err != nil {
		return err
	}

	// The http-01 solver (cert-manager runs a pod answering at the token's path).
	solver, err := startHTTP01(*http01)
	if err != nil {
		return err
	}
	defer solver.Close()

	// The order controller: one order per Certificate, names from dnsNames.
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(*name))
	if err != nil {
		return fmt.Errorf("AuthorizeOrder: %w", err)
	}
	if order.Status != acme.StatusPending || len(order.AuthzURLs) != 1 || order.FinalizeURL == "" {
		return fmt.Errorf("new order: status %q, %d authorizations, finalize %q", order.Status, len(order.AuthzURLs), order.FinalizeURL)
	}
	fmt.Printf("order %s\n", order.URI)
	// The challenge controller: per authorization, pick http-01, present, Accept, wait.
	for _, u := range order.AuthzURLs {
		authz, err := cl.GetAuthorization(ctx, u)
		if err != nil {
			return fmt.Errorf("GetAuthorization: %w", err)
		}
		if authz.Status != acme.StatusPending || authz.Identifier.Value != *name {
			return fmt.Errorf("authorization %s: status %q for %q", u, authz.Status, authz.Identifier.Value)
		}
		var chal *acme.Challenge
		for _, c := range authz.Challenges {
			if c.Type == "http-01" {
				chal = c
			}
		}
		if chal == nil {
			return fmt.Errorf("authorization %s offers no http-01 challenge", u)
		}
		keyAuth, err := cl.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return err
		}
		solver.present(cl.HTTP01ChallengePath(chal.Token), keyAuth)
		if _, err := cl.Accept(ctx, chal); err != nil {
			return fmt.Errorf("Accept: %w", err)
		}
		authz, err = cl.WaitAuthorization(ctx, u)
		if err != nil {
			return fmt.Errorf("WaitAuthorization: %w", err)
		}
		if authz.Status != acme.StatusValid {
			return fmt.Errorf("authorization %s is %q after WaitAuthorization", u, authz.Status)
		}
		ch, err := cl.GetChallenge(ctx, chal.URI)
		if err != nil {
			return fmt.Errorf("GetChallenge: %w", err)
		}
		if ch.Status != acme.StatusValid {
			return fmt.Errorf("challenge %s is %q", chal.URI, ch.Status)
		}
		hosts := solver.hostsFor(cl.HTTP01ChallengePath(chal.Token))
		if len(hosts) == 0 {
			return fmt.Errorf("rampart validated %s without fetching the http-01 resource", *name)
		}
		for _, h := range hosts {
			if h != *name && !strings.HasPrefix(h, *name+":") {
				return fmt.Errorf("rampart's http-01 request carried Host %q, not %q", h, *name)
			}
		}
		fmt.Printf("http-01 valid for %s (%d validation request(s), Host %s)\n", *name, len(hosts), hosts[0])
	}
	order, err = cl.WaitOrder(ctx, order.URI)
	if err != nil {
		return fmt.Errorf("WaitOrder: %w", err)
	}
	if order.Status != acme.StatusReady {
		return fmt.Errorf("order is %q after its authorizations, not ready", order.Status)
	}

	// The CertificateRequest: cert-manager's default key, RSA 2048, names in the SAN only.
	certKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{*name}}, certKey)
	if err != nil {
		return err
	}
	ders, certURL, err := cl.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return fmt.Errorf("CreateOrderCert: %w", err)
	}
	ex, ok := rec.Last(certURL)
	if !ok || ex.Status != http.StatusOK || ex.ContentType != "application/pem-certificate-chain" {
		return fmt.Errorf("the certificate at %s came as %d %q, not application/pem-certificate-chain", certURL, ex.Status, ex.ContentType)
	}
	if len(ders) < 2 {
		return fmt.Errorf("CreateOrderCert(bundle=true) returned %d certificate(s): no chain", len(ders))
	}
	chain := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		if chain[i], err = x509.ParseCertificate(d); err != nil {
			return fmt.Errorf("certificate %d of the chain: %w", i, err)
		}
	}
	leaf := chain[0]
	if pub, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&certKey.PublicKey) {
		return errors.New("the leaf certificate does not carry the CSR's key")
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != *name {
		return fmt.Errorf("the leaf names %v, not [%s]", leaf.DNSNames, *name)
	}
	for i := 1; i < len(chain); i++ {
		if !chain[i].IsCA {
			return fmt.Errorf("chain certificate %d (%s) is not a CA", i, chain[i].Subject)
		}
	}
	fmt.Printf("certificate %s: PEM chain of %d (leaf + %d issuer(s))\n", certURL, len(ders), len(ders)-1)

	// FetchCert, as cert-manager does for an order that turned valid while it was away.
	again, err := cl.FetchCert(ctx, certURL, true)
	if err != nil {
		return fmt.Errorf("FetchCert(bundle=true): %w", err)
	}
	if len(again) != len(ders) || !bytes.Equal(again[0], ders[0]) {
		return fmt.Errorf("FetchCert returned %d certificates, not the %d CreateOrderCert did", len(again), len(ders))
	}
	only, err := cl.FetchCert(ctx, certURL, false)
	if err != nil || len(only) != 1 || !bytes.Equal(only[0], ders[0]) {
		return fmt.Errorf("FetchCert(bundle=false) did not return just the leaf: %d certificates, %v", len(only), err)
	}
	// preferredChain: cert-manager lists the alternates; rampart has one chain.
	if alts, err := cl.ListCertAlternates(ctx, certURL); err != nil {
		return fmt.Errorf("ListCertAlternates: %w", err)
	} else {
		fmt.Printf("alternate chains: %d\n", len(alts))
	}

	if err := acmetest.WritePEM(filepath.Join(*stateDir, "cert.pem"), chain[:1]); err != nil {
		return err
	}
	if err := acmetest.WritePEM(filepath.Join(*stateDir, "chain.pem"), chain[1:]); err != nil {
		return err
	}
	if err := writeKey(filepath.Join(*stateDir, "cert.key"), certKey); err != nil {
		return err
	}
	fmt.Printf("serial %s\n", hex.EncodeToString(leaf.SerialNumber.Bytes()))
	return nil
}

// --- revoke

func revoke(ctx context.Context, rec *acmetest.Recorder) error {
	key, err := readKey(filepath.Join(*stateDir, "account.key"))
	if err != nil {
		return err
	}
	certPEM, err := os.ReadFile(filepath.Join(*stateDir, "cert.pem"))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return errors.New("no certificate in cert.pem")
	}
	cl := newClient(rec, key)
	acct, err := cl.GetReg(ctx, "")
	if err != nil {
		return fmt.Errorf("GetReg with the stored account key: %w", err)
	}
	fmt.Printf("account %s found by its key\n", acct.URI)
	if err := cl.RevokeCert(ctx, nil, block.Bytes, acme.CRLReasonCessationOfOperation); err != nil {
		return fmt.Errorf("RevokeCert: %w", err)
	}
	dir, _ := cl.Discover(ctx)
	if ex, _ := rec.Last(dir.RevokeURL); ex.Status != http.StatusOK {
		return fmt.Errorf("revokeCert answered %d %s", ex.Status, ex.Problem)
	}
	fmt.Println("revoked (cessationOfOperation)")
	// Again: x/crypto hides alreadyRevoked; rampart must answer exactly that.
	if err := cl.RevokeCert(ctx, nil, block.Bytes, acme.CRLReasonCessationOfOperation); err != nil {
		return fmt.Errorf("RevokeCert again: %w", err)
	}
	if ex, _ := rec.Last(dir.RevokeURL); ex.Problem != problemPrefix+"alreadyRevoked" {
		return fmt.Errorf("revoking again answered %d %q, not alreadyRevoked", ex.Status, ex.Problem)
	}
	fmt.Println("revoking again: alreadyRevoked")
	return nil
}

// --- http-01 solver

type http01Solver struct {
	srv   *http.Server
	mu    sync.Mutex
	keys  map[string]string   // path → key authorization
	hosts map[string][]string // path → Host headers of the requests for it
}

func startHTTP01(addr string) (*http01Solver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http-01 solver: %w", err)
	}
	s := &http01Solver{keys: map[string]string{}, hosts: map[string][]string{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *http01Solver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	key, ok := s.keys[r.URL.Path]
	if ok {
		s.hosts[r.URL.Path] = append(s.hosts[r.URL.Path], r.Host)
	}
	s.mu.Unlock()
	fmt.Fprintf(os.Stderr, "http-01 solver: %s %s Host=%s found=%v\n", r.Method, r.URL.Path, r.Host, ok)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, key)
}

func (s *http01Solver) present(path, keyAuth string) {
	s.mu.Lock()
	s.keys[path] = keyAuth
	s.mu.Unlock()
}

func (s *http01Solver) hostsFor(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hosts[path]...)
}

func (s *http01Solver) Close() { s.srv.Close() }

// --- files

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("no key in %s", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return s, nil
}
