// Java's own PKIX CertPathValidator as a relying party of tincay: revocation checking the
// classic way (the security property ocsp.enable=true, CRL distribution points off with
// -Dcom.sun.security.enableCRLDP=false), so a path validates only if the OCSP answers fetched
// from each certificate's AIA (the leaf's, and the issuing CA's from the root) say good.
//
// usage: java OcspPath ROOT.der ISSUING.der LEAF.der [LEAF.der ...]
// prints one line per leaf: "LEAF: valid", or "LEAF: REASON index=I MESSAGE" (REASON is the
// CertPathValidatorException's reason, REVOKED for a revoked certificate; for that one also
// " revocationReason=R").
import java.io.FileInputStream;
import java.io.InputStream;
import java.security.Security;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateFactory;
import java.security.cert.CertificateRevokedException;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.Set;

public class OcspPath {
    public static void main(String[] args) throws Exception {
        Security.setProperty("ocsp.enable", "true");
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        X509Certificate root = load(factory, args[0]);
        X509Certificate issuing = load(factory, args[1]);
        CertPathValidator validator = CertPathValidator.getInstance("PKIX");
        for (int i = 2; i < args.length; i++) {
            CertPath path = factory.generateCertPath(List.of(load(factory, args[i]), issuing));
            PKIXParameters parameters = new PKIXParameters(Set.of(new TrustAnchor(root, null)));
            parameters.setRevocationEnabled(true);
            try {
                validator.validate(path, parameters);
                System.out.println(args[i] + ": valid");
            } catch (CertPathValidatorException e) {
                String line = args[i] + ": " + e.getReason() + " index=" + e.getIndex() + " "
                        + e.getMessage();
                if (e.getCause() instanceof CertificateRevokedException) {
                    line += " revocationReason="
                            + ((CertificateRevokedException) e.getCause()).getRevocationReason();
                }
                System.out.println(line);
            }
        }
    }

    private static X509Certificate load(CertificateFactory factory, String file) throws Exception {
        try (InputStream in = new FileInputStream(file)) {
            return (X509Certificate) factory.generateCertificate(in);
        }
    }
}
