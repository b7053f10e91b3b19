// Go's golang.org/x/crypto/ocsp as a relying party of tincay's OCSP responder: for each
// certificate it builds a request (ocsp.CreateRequest), asks by HTTP POST and by RFC 5019 GET,
// and parses each answer with ocsp.ParseResponseForCert against the issuer, which checks the
// signature (and that a delegated responder's certificate is the issuer's). It also checks what
// that package leaves to its caller: a delegated responder must hold id-kp-OCSPSigning, and
// every answer carries a nextUpdate.
//
// usage: ocspcheck OCSP_URL ISSUER.pem CERT.pem [CERT.pem ...]
// prints "CERT METHOD: good", "CERT METHOD: revoked reason=N" or "CERT METHOD: unknown" per
// certificate and method (POST, GET); any error ends the program with exit status 1.
package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"
)

func load(path string) *x509.Certificate {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		fail("%s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		fail("%s: %v", path, err)
	}
	return cert
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func answer(response *http.Response, err error) []byte {
	if err != nil {
		fail("%v", err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		fail("%v", err)
	}
	if response.StatusCode != http.StatusOK ||
		response.Header.Get("Content-Type") != "application/ocsp-response" {
		fail("HTTP %d %s", response.StatusCode, response.Header.Get("Content-Type"))
	}
	return body
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: ocspcheck OCSP_URL ISSUER.pem CERT.pem [CERT.pem ...]")
	}
	responder, issuer := os.Args[1], load(os.Args[2])
	client := &http.Client{Timeout: 30 * time.Second}
	for _, path := range os.Args[3:] {
		cert := load(path)
		request, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{})
		if err != nil {
			fail("%s: CreateRequest: %v", path, err)
		}
		get := strings.TrimSuffix(responder, "/") + "/" +
			url.QueryEscape(base64.StdEncoding.EncodeToString(request))
		for _, method := range []string{"POST", "GET"} {
			var body []byte
			if method == "POST" {
				body = answer(client.Post(responder, "application/ocsp-request",
					bytes.NewReader(request)))
			} else {
				body = answer(client.Get(get))
			}
			parsed, err := ocsp.ParseResponseForCert(body, cert, issuer)
			if err != nil {
				fail("%s %s: ParseResponseForCert: %v", path, method, err)
			}
			if parsed.Certificate != nil && !hasOCSPSigning(parsed.Certificate) {
				fail("%s %s: the delegated responder lacks id-kp-OCSPSigning", path, method)
			}
			if parsed.NextUpdate.IsZero() || parsed.SerialNumber.Cmp(cert.SerialNumber) != 0 {
				fail("%s %s: no nextUpdate, or the answer is for another serial", path, method)
			}
			switch parsed.Status {
			case ocsp.Good:
				fmt.Printf("%s %s: good\n", path, method)
			case ocsp.Revoked:
				fmt.Printf("%s %s: revoked reason=%d\n", path, method, parsed.RevocationReason)
			default:
				fmt.Printf("%s %s: unknown\n", path, method)
			}
		}
	}
}

func hasOCSPSigning(cert *x509.Certificate) bool {
	for _, usage := range cert.ExtKeyUsage {
		if usage == x509.ExtKeyUsageOCSPSigning {
			return true
		}
	}
	return false
}
