// Package pki is a throwaway certificate authority for tests: it writes a
// CA and the certificates it issues as PEM files into one directory. The
// keys are test keys, valid for a day, never used outside a test run.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA issues certificates into Dir.
type CA struct {
	Dir    string
	CAFile string // PEM of the CA certificate
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	next   int64
}

// New creates a CA in dir.
func New(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outpost test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	ca := &CA{Dir: dir, cert: cert, key: key, next: 2}
	if ca.CAFile, err = ca.write("ca.pem", pemBlock("CERTIFICATE", der)); err != nil {
		return nil, err
	}
	return ca, nil
}

// Issue signs a certificate for cn. Server certificates are valid for
// 127.0.0.1 and localhost; client certificates carry cn as the identity.
// The key is written as unencrypted PKCS#8, which Go and Kafka both read.
func (ca *CA) Issue(cn string, server bool) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	ca.mu.Lock()
	serial := ca.next
	ca.next++
	ca.mu.Unlock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	if certFile, err = ca.write(cn+".pem", pemBlock("CERTIFICATE", der)); err != nil {
		return "", "", err
	}
	if keyFile, err = ca.write(cn+"-key.pem", pemBlock("PRIVATE KEY", kder)); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func (ca *CA) write(name string, data []byte) (string, error) {
	path := filepath.Join(ca.Dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("pki: %w", err)
	}
	return path, nil
}
