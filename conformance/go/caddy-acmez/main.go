// caddy-acmez drives rampart's ACME server with github.com/mholt/acmez, the ACME library
// under Caddy (through certmagic), the way certmagic uses it: an ECDSA P-256 account key
// (ES256), acmez.Client with challenge solvers, ObtainCertificate for all of a site's
// names in one order, P-256 certificate keys. The solvers are written here as certmagic's
// are: http-01 answers at /.well-known/acme-challenge/<token>, tls-alpn-01 serves
// acmez.TLSALPN01ChallengeCert to handshakes offering only acme-tls/1 (RFC 8737).
// It is built by conformance/acme-go-libraries.sh (GOPATH mode, Debian's
// golang-github-mholt-acmez-dev).
//
//	caddy-acmez -directory URL -ca ca-bundle.pem -out DIR -http01 ADDR -tlsalpn01 ADDR \
//	    -http-names a,b -alpn-names c,d
//
// One account; one order per challenge type, each for two names, with only that type's
// solver enabled (acmez otherwise picks among the solvers at random). For each it writes
// DIR/<type>/cert.pem (leaf) and DIR/<type>/chain.pem (issuers) and prints
// "serial <type> <hex>"; it fails unless rampart fetched every name's challenge through
// the solver of that type, by name (Host header, SNI).
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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
	"sort"
	"strings"
	"sync"
	"time"

	"acmetest"

	"github.com/mholt/acmez"
	"github.com/mholt/acmez/acme"
	"go.uber.org/zap"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("caddy-acmez: ")
	directory := flag.String("directory", "", "ACME directory URL")
	caFile := flag.String("ca", "", "PEM bundle to trust for the directory's TLS certificate")
	outDir := flag.String("out", "", "output directory")
	http01 := flag.String("http01", "", "address of the http-01 responder")
	tlsalpn01 := flag.String("tlsalpn01", "", "address of the tls-alpn-01 responder")
	httpNames := flag.String("http-names", "", "comma-separated names for the http-01 order")
	alpnNames := flag.String("alpn-names", "", "comma-separated names for the tls-alpn-01 order")
	flag.Parse()
	if *directory == "" || *caFile == "" || *outDir == "" || *http01 == "" || *tlsalpn01 == "" || *httpNames == "" || *alpnNames == "" {
		log.Fatal("usage: -directory URL -ca FILE -out DIR -http01 ADDR -tlsalpn01 ADDR -http-names a,b -alpn-names c,d")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// As Caddy's acme issuer with trusted_roots: rampart's CA bundle only, every exchange recorded.
	rec := acmetest.NewRecorder(*caFile)
	err := run(ctx, rec, *directory, *outDir, *http01, *tlsalpn01,
		strings.Split(*httpNames, ","), strings.Split(*alpnNames, ","))
	rec.Finish(err)
}

func run(ctx context.Context, rec *acmetest.Recorder, directory, outDir, http01Addr, alpnAddr string, httpNames, alpnNames []string) error {
	// acmez's own account of the flow, to stderr (its requests are in the "http:" trace).
	logCfg := zap.NewDevelopmentConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	logCfg.DisableStacktrace = true
	logger, err := logCfg.Build()
	if err != nil {
		return err
	}
	defer logger.Sync()
	// certmagic's default account key type: ECDSA P-256.
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	client := &acme.Client{
		Directory:  directory,
		HTTPClient: rec.Client(),
		UserAgent:  "rampart-conformance caddy/acmez",
		Logger:     logger,
	}
	account, err := client.NewAccount(ctx, acme.Account{
		Contact:              []string{"mailto:ops@example.org"},
		TermsOfServiceAgreed: true,
		PrivateKey:           accountKey,
	})
	if err != nil {
		return fmt.Errorf("NewAccount: %w", err)
	}
	if account.Status != acme.StatusValid || account.Location == "" {
		return fmt.Errorf("new account: status %q, location %q", account.Status, account.Location)
	}
	// certmagic looks its stored account up by key (onlyReturnExisting) before using it.
	found, err := client.GetAccount(ctx, acme.Account{PrivateKey: accountKey})
	if err != nil {
		return fmt.Errorf("GetAccount: %w", err)
	}
	if found.Location != account.Location || found.Status != acme.StatusValid {
		return fmt.Errorf("GetAccount found %s (%s), registered %s", found.Location, found.Status, account.Location)
	}
	fmt.Printf("account %s (ES256)\n", account.Location)

	solvers := newSolvers()
	if err := solvers.listenHTTP(http01Addr); err != nil {
		return err
	}
	if err := solvers.listenALPN(alpnAddr); err != nil {
		return err
	}
	defer solvers.close()

	for _, o := range []struct {
		kind   string
		solver acmez.Solver
		names  []string
	}{
		{acme.ChallengeTypeHTTP01, httpSolver{solvers}, httpNames},
		{acme.ChallengeTypeTLSALPN01, alpnSolver{solvers}, alpnNames},
	} {
		ac := acmez.Client{Client: client, ChallengeSolvers: map[string]acmez.Solver{o.kind: o.solver}, Logger: logger}
		certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		chains, err := ac.ObtainCertificate(ctx, account, certKey, o.names)
		if err != nil {
			return fmt.Errorf("ObtainCertificate (%s, %v): %w", o.kind, o.names, err)
		}
		if len(chains) == 0 {
			return fmt.Errorf("%s: no certificate chain", o.kind)
		}
		ex, ok := rec.Last(chains[0].URL)
		if !ok || ex.ContentType != "application/pem-certificate-chain" {
			return fmt.Errorf("%s: the certificate at %s came as %q", o.kind, chains[0].URL, ex.ContentType)
		}
		certs, err := parseChain(chains[0].ChainPEM)
		if err != nil {
			return fmt.Errorf("%s: %w", o.kind, err)
		}
		if len(certs) < 2 {
			return fmt.Errorf("%s: the chain holds %d certificate(s), no issuer", o.kind, len(certs))
		}
		leaf := certs[0]
		if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&certKey.PublicKey) {
			return fmt.Errorf("%s: the leaf does not carry the certificate key", o.kind)
		}
		if got, want := sorted(leaf.DNSNames), sorted(o.names); got != want {
			return fmt.Errorf("%s: the leaf names %s, ordered %s", o.kind, got, want)
		}
		for _, name := range o.names {
			if n := solvers.hits(o.kind, name); n == 0 {
				return fmt.Errorf("%s: rampart issued for %s without fetching its %s challenge by name", o.kind, name, o.kind)
			}
		}
		dir := filepath.Join(outDir, o.kind)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := acmetest.WritePEM(filepath.Join(dir, "cert.pem"), certs[:1]); err != nil {
			return err
		}
		if err := acmetest.WritePEM(filepath.Join(dir, "chain.pem"), certs[1:]); err != nil {
			return err
		}
		fmt.Printf("%s: certificate for %s, chain of %d\n", o.kind, sorted(o.names), len(certs))
		fmt.Printf("serial %s %s\n", o.kind, hex.EncodeToString(leaf.SerialNumber.Bytes()))
	}
	return nil
}

// --- solvers, as certmagic's: presented challenges by name, one HTTP and one TLS listener.

type solverState struct {
	mu       sync.Mutex
	http     map[string]acme.Challenge // token path → challenge
	alpn     map[string]acme.Challenge // name → challenge
	seen     map[string]int            // type + " " + name → validation requests answered
	closers  []io.Closer
	failures []string
}

func newSolvers() *solverState {
	return &solverState{http: map[string]acme.Challenge{}, alpn: map[string]acme.Challenge{}, seen: map[string]int{}}
}

func (s *solverState) hits(kind, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[kind+" "+name]
}

func (s *solverState) close() {
	for _, c := range s.closers {
		c.Close()
	}
}

func (s *solverState) listenHTTP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http-01 responder: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		chal, ok := s.http[r.URL.Path]
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ok = ok && strings.EqualFold(host, chal.Identifier.Value)
		if ok {
			s.seen[acme.ChallengeTypeHTTP01+" "+chal.Identifier.Value]++
		}
		s.mu.Unlock()
		fmt.Fprintf(os.Stderr, "http-01 responder: %s %s Host=%s answered=%v\n", r.Method, r.URL.Path, r.Host, ok)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, chal.KeyAuthorization)
	})}
	go srv.Serve(ln)
	s.closers = append(s.closers, srv)
	return nil
}

func (s *solverState) listenALPN(addr string) error {
	cfg := &tls.Config{
		NextProtos: []string{acmez.ACMETLS1Protocol},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			// RFC 8737 §3: only acme-tls/1, with the identifier as SNI.
			if len(hello.SupportedProtos) != 1 || hello.SupportedProtos[0] != acmez.ACMETLS1Protocol {
				return nil, fmt.Errorf("tls-alpn-01 responder: ALPN %v is not just %s", hello.SupportedProtos, acmez.ACMETLS1Protocol)
			}
			s.mu.Lock()
			chal, ok := s.alpn[strings.ToLower(hello.ServerName)]
			if ok {
				s.seen[acme.ChallengeTypeTLSALPN01+" "+chal.Identifier.Value]++
			}
			s.mu.Unlock()
			fmt.Fprintf(os.Stderr, "tls-alpn-01 responder: SNI=%s ALPN=%v answered=%v\n", hello.ServerName, hello.SupportedProtos, ok)
			if !ok {
				return nil, fmt.Errorf("tls-alpn-01 responder: no challenge for SNI %q", hello.ServerName)
			}
			return acmez.TLSALPN01ChallengeCert(chal)
		},
	}
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		return fmt.Errorf("tls-alpn-01 responder: %w", err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					fmt.Fprintf(os.Stderr, "tls-alpn-01 responder: handshake: %v\n", err)
				}
			}()
		}
	}()
	s.closers = append(s.closers, ln)
	return nil
}

type httpSolver struct{ *solverState }

func (h httpSolver) Present(_ context.Context, chal acme.Challenge) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.http[chal.HTTP01ResourcePath()] = chal
	return nil
}

func (h httpSolver) CleanUp(_ context.Context, chal acme.Challenge) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.http, chal.HTTP01ResourcePath())
	return nil
}

type alpnSolver struct{ *solverState }

func (a alpnSolver) Present(_ context.Context, chal acme.Challenge) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alpn[strings.ToLower(chal.Identifier.Value)] = chal
	return nil
}

func (a alpnSolver) CleanUp(_ context.Context, chal acme.Challenge) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.alpn, strings.ToLower(chal.Identifier.Value))
	return nil
}

// --- helpers

func parseChain(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q in the chain", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		return nil, errors.New("trailing data after the PEM chain")
	}
	return certs, nil
}

func sorted(names []string) string {
	s := append([]string(nil), names...)
	sort.Strings(s)
	return strings.Join(s, ",")
}
