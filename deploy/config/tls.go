package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrNoCerts means a CA file held no PEM certificate.
var ErrNoCerts = errors.New("no certificates found")

// ClientTLS is the TLS section of a client connection: the agent's uplink
// to the hub, the hub's connection to Kafka.
type ClientTLS struct {
	CAFile   string `yaml:"ca_file" usage:"PEM CA bundle to verify the server with (default: system roots)"`
	CertFile string `yaml:"cert_file" usage:"PEM client certificate for mTLS"`
	KeyFile  string `yaml:"key_file" usage:"PEM private key of the client certificate"`
}

// On reports whether a file is configured.
func (t ClientTLS) On() bool { return t.CAFile != "" || t.CertFile != "" }

// Validate reports wrong fields under path (e.g. "kafka.tls").
func (t ClientTLS) Validate(path string, errs *Errors) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs.Add(path, "cert_file and key_file go together")
	}
	for key, f := range map[string]string{"ca_file": t.CAFile, "cert_file": t.CertFile, "key_file": t.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				errs.Add(path+"."+key, err.Error())
			}
		}
	}
}

// Build returns the tls.Config, or nil when no file is configured.
func (t ClientTLS) Build() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: %w", t.CAFile, ErrNoCerts)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
