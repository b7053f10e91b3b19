// The Java peer of bench/peers.py: an RFC 3161 TSA built like SignServer's (the JDK's
// com.sun.net.httpserver on a fixed thread pool, Bouncy Castle's TimeStampTokenGenerator with
// ESSCertIDv2, SHA-256) and a nonce OCSP responder (Bouncy Castle's BasicOCSPRespBuilder),
// both signing live with tincay's own SoftHSM keys through SunPKCS11. It logs nothing and
// keeps no token log: it is the yardstick an operator would pick instead, not a product.
//
// Usage: java -cp BC_JARS:DIR JavaPeer PORT THREADS PKCS11_CONFIG TSA_CERT OCSP_CERT CA_CERT
//        TSA_POLICY_OID STATUS_FILE
// The token's PIN comes from the file named by the environment variable PEER_PIN_FILE (never
// argv). STATUS_FILE: one "serial-hex good" or "serial-hex revoked EPOCH-SECONDS REASON" a line
// (the bench writes it from tincay's database); serials not in it are answered "unknown".
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigInteger;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.Security;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.Collections;
import java.util.Date;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

import org.bouncycastle.asn1.ASN1ObjectIdentifier;
import org.bouncycastle.asn1.nist.NISTObjectIdentifiers;
import org.bouncycastle.asn1.ocsp.OCSPObjectIdentifiers;
import org.bouncycastle.asn1.x509.AlgorithmIdentifier;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.Extensions;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaCertStore;
import org.bouncycastle.cert.jcajce.JcaX509CertificateHolder;
import org.bouncycastle.cert.ocsp.BasicOCSPResp;
import org.bouncycastle.cert.ocsp.BasicOCSPRespBuilder;
import org.bouncycastle.cert.ocsp.CertificateID;
import org.bouncycastle.cert.ocsp.CertificateStatus;
import org.bouncycastle.cert.ocsp.OCSPReq;
import org.bouncycastle.cert.ocsp.OCSPResp;
import org.bouncycastle.cert.ocsp.OCSPRespBuilder;
import org.bouncycastle.cert.ocsp.Req;
import org.bouncycastle.cert.ocsp.RespID;
import org.bouncycastle.cert.ocsp.RevokedStatus;
import org.bouncycastle.cert.ocsp.UnknownStatus;
import org.bouncycastle.cms.jcajce.JcaSignerInfoGeneratorBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.operator.ContentSigner;
import org.bouncycastle.operator.DigestCalculator;
import org.bouncycastle.operator.DigestCalculatorProvider;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.operator.jcajce.JcaDigestCalculatorProviderBuilder;
import org.bouncycastle.tsp.TSPAlgorithms;
import org.bouncycastle.tsp.TimeStampRequest;
import org.bouncycastle.tsp.TimeStampResponse;
import org.bouncycastle.tsp.TimeStampResponseGenerator;
import org.bouncycastle.tsp.TimeStampTokenGenerator;

public final class JavaPeer {
    private static final AtomicLong SERIAL = new AtomicLong(System.currentTimeMillis() * 1000);

    private static Provider p11;
    private static PrivateKey tsaKey, ocspKey;
    private static X509Certificate tsaCert, ocspCert, caCert;
    private static ASN1ObjectIdentifier policy;
    private static X509CertificateHolder caHolder;
    private static DigestCalculatorProvider digests;
    private static final Map<BigInteger, CertificateStatus> STATUS = new HashMap<>();

    // A ContentSigner holds one Signature object: not thread-safe, so one generator per thread
    // (each draws its own session from SunPKCS11's pool).
    private static final ThreadLocal<TimeStampResponseGenerator> TSA =
        ThreadLocal.withInitial(JavaPeer::tsaGenerator);
    private static final ThreadLocal<ContentSigner> OCSP_SIGNER =
        ThreadLocal.withInitial(() -> signer(ocspKey));

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        int threads = Integer.parseInt(args[1]);
        Security.addProvider(new BouncyCastleProvider());
        p11 = Security.getProvider("SunPKCS11").configure(args[2]);
        Security.addProvider(p11);
        tsaCert = readCert(args[3]);
        ocspCert = readCert(args[4]);
        caCert = readCert(args[5]);
        policy = new ASN1ObjectIdentifier(args[6]);
        loadStatus(Path.of(args[7]));
        String pinFile = System.getenv("PEER_PIN_FILE");
        if (pinFile == null) {
            throw new IllegalStateException("PEER_PIN_FILE is not set");
        }
        char[] pin = Files.readString(Path.of(pinFile)).strip().toCharArray();
        KeyStore store = KeyStore.getInstance("PKCS11", p11);
        store.load(null, pin);
        tsaKey = keyFor(store, tsaCert);
        ocspKey = keyFor(store, ocspCert);
        caHolder = new JcaX509CertificateHolder(caCert);
        digests = new JcaDigestCalculatorProviderBuilder().setProvider("BC").build();

        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 1024);
        server.setExecutor(Executors.newFixedThreadPool(threads));
        server.createContext("/tsa", JavaPeer::timestamp);
        server.createContext("/ocsp", JavaPeer::ocsp);
        server.createContext("/healthz", exchange -> reply(exchange, 200, "text/plain",
                                                            "ok".getBytes(StandardCharsets.US_ASCII)));
        server.start();
        System.out.println("listening on " + port);
    }

    private static void timestamp(HttpExchange exchange) throws IOException {
        byte[] body = readBody(exchange);
        try {
            TimeStampRequest request = new TimeStampRequest(body);
            BigInteger serial = BigInteger.valueOf(SERIAL.incrementAndGet());
            TimeStampResponse response = TSA.get().generate(request, serial, new Date());
            reply(exchange, 200, "application/timestamp-reply", response.getEncoded());
        } catch (Exception e) {
            reply(exchange, 400, "text/plain", e.toString().getBytes(StandardCharsets.UTF_8));
        }
    }

    private static void ocsp(HttpExchange exchange) throws IOException {
        byte[] body = readBody(exchange);
        try {
            OCSPReq request = new OCSPReq(body);
            BasicOCSPRespBuilder builder = new BasicOCSPRespBuilder(
                new RespID(new JcaX509CertificateHolder(ocspCert).getSubject()));
            Date now = new Date();
            Date next = new Date(now.getTime() + 12L * 3600 * 1000);
            for (Req one : request.getRequestList()) {
                CertificateID id = one.getCertID();
                CertificateStatus status = new UnknownStatus();
                if (id.matchesIssuer(caHolder, digests)) {
                    status = STATUS.getOrDefault(id.getSerialNumber(), new UnknownStatus());
                }
                builder.addResponse(id, status, now, next);
            }
            Extension nonce = request.getExtension(OCSPObjectIdentifiers.id_pkix_ocsp_nonce);
            if (nonce != null) {
                builder.setResponseExtensions(new Extensions(nonce));
            }
            BasicOCSPResp basic = builder.build(OCSP_SIGNER.get(),
                new X509CertificateHolder[] {new JcaX509CertificateHolder(ocspCert)}, now);
            OCSPResp response = new OCSPRespBuilder().build(OCSPRespBuilder.SUCCESSFUL, basic);
            reply(exchange, 200, "application/ocsp-response", response.getEncoded());
        } catch (Exception e) {
            reply(exchange, 400, "text/plain", e.toString().getBytes(StandardCharsets.UTF_8));
        }
    }

    private static TimeStampResponseGenerator tsaGenerator() {
        try {
            DigestCalculator sha256 = digests.get(new AlgorithmIdentifier(
                NISTObjectIdentifiers.id_sha256));
            TimeStampTokenGenerator tokens = new TimeStampTokenGenerator(
                new JcaSignerInfoGeneratorBuilder(digests).build(signer(tsaKey), tsaCert),
                sha256, policy);  // a SHA-256 ESSCertID: signingCertificateV2
            tokens.addCertificates(new JcaCertStore(List.of(tsaCert)));
            return new TimeStampResponseGenerator(tokens, TSPAlgorithms.ALLOWED);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static ContentSigner signer(PrivateKey key) {
        try {
            String algorithm = key.getAlgorithm().equals("RSA") ? "SHA256withRSA" : "SHA256withECDSA";
            return new JcaContentSignerBuilder(algorithm).setProvider(p11).build(key);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static PrivateKey keyFor(KeyStore store, X509Certificate cert) throws Exception {
        for (String alias : Collections.list(store.aliases())) {
            if (store.isKeyEntry(alias) && cert.equals(store.getCertificate(alias))) {
                return (PrivateKey) store.getKey(alias, null);
            }
        }
        throw new IllegalStateException("no key on the token for " + cert.getSubjectX500Principal());
    }

    private static void loadStatus(Path file) throws IOException {
        for (String line : Files.readAllLines(file)) {
            String[] f = line.strip().split("\\s+");
            if (f.length < 2) {
                continue;
            }
            BigInteger serial = new BigInteger(f[0], 16);
            if (f[1].equals("good")) {
                STATUS.put(serial, CertificateStatus.GOOD);
            } else {
                STATUS.put(serial, new RevokedStatus(new Date(Long.parseLong(f[2]) * 1000),
                                                     Integer.parseInt(f[3])));
            }
        }
    }

    private static X509Certificate readCert(String path) throws Exception {
        try (InputStream in = Files.newInputStream(Path.of(path))) {
            return (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
    }

    private static byte[] readBody(HttpExchange exchange) throws IOException {
        try (InputStream in = exchange.getRequestBody()) {
            return in.readAllBytes();
        }
    }

    private static void reply(HttpExchange exchange, int status, String type, byte[] body)
            throws IOException {
        exchange.getResponseHeaders().set("Content-Type", type);
        exchange.sendResponseHeaders(status, body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(body);
        }
    }
}
