// Package acmetest holds what the conformance programs in conformance/go/ share: an HTTP
// transport that trusts rampart's CA bundle only and records every exchange (so that a 5xx
// fails the run even when a library's own retries hid it), and writing certificates as PEM.
// conformance/acme-go-libraries.sh puts it on GOPATH as import path "acmetest".
package acmetest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Exchange is one recorded HTTP exchange: the request, the answer's status and media type,
// and the problem type when the answer is application/problem+json.
type Exchange struct {
	Method, URL, ContentType, Problem string
	Status                            int
}

// Recorder is an http.RoundTripper that logs every exchange to stderr and keeps it.
type Recorder struct {
	base http.RoundTripper
	mu   sync.Mutex
	log  []Exchange
}

// NewRecorder trusts an explicit RootCAs pool from the PEM bundle (no InsecureSkipVerify,
// no system roots); it exits when the bundle cannot be read or holds no certificate.
func NewRecorder(bundle string) *Recorder {
	pemBytes, err := os.ReadFile(bundle)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		log.Fatalf("no certificate in %s", bundle)
	}
	return &Recorder{base: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
	}}
}

// Client is an http.Client over the recorder.
func (r *Recorder) Client() *http.Client {
	return &http.Client{Transport: r, Timeout: 30 * time.Second}
}

// RoundTrip sends req and records the exchange.
func (r *Recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	ex := Exchange{Method: req.Method, URL: req.URL.String(), Status: res.StatusCode}
	ex.ContentType, _, _ = mime.ParseMediaType(res.Header.Get("Content-Type"))
	if ex.ContentType == "application/problem+json" {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(body))
		var p struct{ Type string }
		_ = json.Unmarshal(body, &p)
		ex.Problem = p.Type
	}
	fmt.Fprintf(os.Stderr, "http: %s %s -> %d %s %s\n", ex.Method, ex.URL, ex.Status, ex.ContentType, ex.Problem)
	r.mu.Lock()
	r.log = append(r.log, ex)
	r.mu.Unlock()
	return res, nil
}

// Last is the most recent exchange with url.
func (r *Recorder) Last(url string) (Exchange, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.log) - 1; i >= 0; i-- {
		if r.log[i].URL == url {
			return r.log[i], true
		}
	}
	return Exchange{}, false
}

// ServerErrors lists the exchanges answered with a 5xx status.
func (r *Recorder) ServerErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var bad []string
	for _, ex := range r.log {
		if ex.Status >= 500 {
			bad = append(bad, fmt.Sprintf("%s %s -> %d %s", ex.Method, ex.URL, ex.Status, ex.Problem))
		}
	}
	return bad
}

// Finish exits the program with a failure when rampart answered any request with a 5xx
// (even one the library retried) or when err is not nil.
func (r *Recorder) Finish(err error) {
	if bad := r.ServerErrors(); len(bad) > 0 {
		log.Fatalf("rampart answered with server errors (the library may have retried them): %s", strings.Join(bad, "; "))
	}
	if err != nil {
		log.Fatal(err)
	}
}

// WritePEM writes the certificates to path as CERTIFICATE blocks, in order.
func WritePEM(path string, certs []*x509.Certificate) error {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
