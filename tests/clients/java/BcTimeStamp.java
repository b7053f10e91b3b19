// Bouncy Castle's TSP API as a client of tincay's TSA: a TimeStampReq over HTTP POST, then
// TimeStampResponse.validate(request) (status, imprint, nonce, the TSA certificate's critical
// timeStamping EKU) and TimeStampToken.validate with a verifier built from the TSA certificate.
// The TSA certificate and its issuing CA are taken from the token itself (certReq is set) and
// must chain to the given root under Java's PKIX validator: the token has to carry the chain.
//
// usage: java BcTimeStamp TSA_URL ROOT.der BITS [BITS ...]
// BITS is the nonce size: a random positive nonce whose top bit (BITS-1) is set, so 64 is an
// 8-octet INTEGER (9 with its sign octet) and 256 a 33-octet one. Prints one line per nonce:
// "BITS: ok chain=N serial=S" or "BITS: FAIL <exception>".
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigInteger;
import java.net.HttpURLConnection;
import java.net.URL;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.security.Security;
import java.security.cert.CertPathValidator;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Set;

import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoVerifierBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.tsp.TSPAlgorithms;
import org.bouncycastle.tsp.TimeStampRequest;
import org.bouncycastle.tsp.TimeStampRequestGenerator;
import org.bouncycastle.tsp.TimeStampResponse;
import org.bouncycastle.tsp.TimeStampToken;

public class BcTimeStamp {
    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        X509Certificate root;
        try (InputStream in = new FileInputStream(args[1])) {
            root = (X509Certificate) factory.generateCertificate(in);
        }
        SecureRandom random = new SecureRandom();
        for (int i = 2; i < args.length; i++) {
            int bits = Integer.parseInt(args[i]);
            BigInteger nonce = BigInteger.ONE.shiftLeft(bits - 1)
                    .or(new BigInteger(bits - 1, random));
            try {
                System.out.println(bits + ": " + stamp(args[0], root, nonce, factory));
            } catch (Exception e) {
                System.out.println(bits + ": FAIL " + e);
            }
        }
    }

    private static String stamp(String url, X509Certificate root, BigInteger nonce,
                                CertificateFactory factory) throws Exception {
        byte[] digest = MessageDigest.getInstance("SHA-256").digest(
                ("Benh an dien tu " + nonce).getBytes("UTF-8"));
        TimeStampRequestGenerator generator = new TimeStampRequestGenerator();
        generator.setCertReq(true);
        TimeStampRequest request = generator.generate(TSPAlgorithms.SHA256, digest, nonce);
        TimeStampResponse response = new TimeStampResponse(post(url, request.getEncoded()));
        response.validate(request);  // throws TSPValidationException on any mismatch
        TimeStampToken token = response.getTimeStampToken();
        if (token == null) {
            throw new IllegalStateException("no token: " + response.getStatusString());
        }
        JcaX509CertificateConverter converter = new JcaX509CertificateConverter().setProvider("BC");
        @SuppressWarnings("unchecked")
        Collection<X509CertificateHolder> holders = token.getCertificates().getMatches(null);
        X509CertificateHolder signer = null;
        List<X509Certificate> chain = new ArrayList<>();
        for (X509CertificateHolder holder : holders) {
            if (token.getSID().match(holder)) {
                signer = holder;
                chain.add(0, converter.getCertificate(holder));
            } else {
                chain.add(converter.getCertificate(holder));
            }
        }
        if (signer == null) {
            throw new IllegalStateException("the token does not carry its signer's certificate");
        }
        PKIXParameters parameters = new PKIXParameters(Set.of(new TrustAnchor(root, null)));
        parameters.setRevocationEnabled(false);  // the OCSP clients judge revocation
        CertPathValidator.getInstance("PKIX").validate(factory.generateCertPath(chain), parameters);
        token.validate(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(signer));
        if (!token.getTimeStampInfo().getNonce().equals(nonce)) {
            throw new IllegalStateException("nonce not echoed");
        }
        return "ok chain=" + chain.size() + " serial=" + token.getTimeStampInfo().getSerialNumber();
    }

    private static byte[] post(String url, byte[] body) throws Exception {
        HttpURLConnection connection = (HttpURLConnection) new URL(url).openConnection();
        connection.setDoOutput(true);
        connection.setRequestMethod("POST");
        connection.setRequestProperty("Content-Type", "application/timestamp-query");
        try (OutputStream out = connection.getOutputStream()) {
            out.write(body);
        }
        if (connection.getResponseCode() != 200
                || !"application/timestamp-reply".equals(connection.getContentType())) {
            throw new IllegalStateException("HTTP " + connection.getResponseCode() + " "
                                            + connection.getContentType());
        }
        try (InputStream in = connection.getInputStream()) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            in.transferTo(out);
            return out.toByteArray();
        }
    }
}
