"""The invoice schema's label phrases in English, German, French, Dutch, Italian and Spanish,
as regexes over normalised text.

Normalised means lower case, no accents, ß as ss. Longer phrases beat shorter ones, so "Total
TVA" is a tax label and not a total, and "N° TVA" is a tax id and not a tax amount.
"""

from __future__ import annotations

from pipeline.text.labels import LabelSpec

# Pieces shared by several phrases.
_NO = r"(?:n\s?[°o*º]\.?|no\.?|nr\.?|number|nummer|numero|num\.?|#|nо|n\.)"
_TAXWORD = (
    r"(?:vat|tax|gst|hst|btw|tva|mwst\.?|ust\.?|umsatzs?steuer|mehrwertsteuer|iva|steuer"
    r"|taxe\s*sur\s*la\s*valeur\s*ajoutee|imposta|impuesto|igic)"
)
# Words naming the document itself ("Rechnung", "Teilrechnung", "Facture", "Fattura").
_DOC = (
    r"(?:[a-z]*rechnung|invoice|facture|factuur|fattura|factura|gutschrift|avoir|credit\s*note"
    r"|nota\s*di\s*credito|folio|quittung|receipt)"
)
# Up to three words between the document's name and its number ("Teilrechnung Bau (875)
# Nr."), none of which names another party's or document's number.
_BETWEEN = (
    r"(?:\s+(?!(?:kunden?|customer|client|order|auftrag|bestell|commande|liefer|steuer|ust|tax"
    r"|vat|tva|konto|account|contrat|vertrag|projekt|project)\w*)[\w().\-]+){0,3}?"
)
_INCL = r"(?:incl\.?|including|inclusive|inc\.?|inkl\.?|inklusive|inclusief|y\s*compris)"
_EXCL = r"(?:excl\.?|excluding|exclusive|exkl\.?|exklusive|exclusief|zzgl\.?|ohne|hors)"

INVOICE_NUMBER = [
    LabelSpec("invoice_number", 3, rf"invoice\s*{_NO}|invoice\s*id|inv\.?\s*{_NO}"),
    LabelSpec(
        "invoice_number",
        3,
        rf"rechnungs?\.?\s*-?\s*{_NO}|rechnungs?nr\.?|rechnungs-?nummer|{_DOC}{_BETWEEN}\s*{_NO}",
    ),
    LabelSpec(
        "invoice_number",
        3,
        rf"(?:fattura|factura)\s*{_NO}|{_NO}\s*(?:de\s+)?(?:fattura|factura)|numero\s*documento"
        r"|num\.?\s*doc\.?|folio\s*(?:no\.?|nr\.?|number)|numero\s*de\s*factura",
    ),
    LabelSpec("invoice_number", 3, rf"facture\s*{_NO}|{_NO}\s*(?:de\s+)?(?:la\s+)?facture"),
    LabelSpec("invoice_number", 3, rf"factuur\s*-?\s*{_NO}|factuurnr\.?|factuurnummer"),
    LabelSpec("invoice_number", 3, rf"bill\s*{_NO}|tax\s*invoice\s*{_NO}"),
    LabelSpec("invoice_number", 2, rf"beleg\s*-?\s*{_NO}|belegnummer|document\s*{_NO}"),
    # A title followed directly by the number: "Invoice 103767", "Rechnung RE-2017/505".
    LabelSpec("invoice_number", 1.5, r"invoice|rechnung|facture|factuur|tax\s*invoice", "title"),
]

# Labels that name some other number and must not be read as the invoice number.
OTHER_NUMBERS = [
    LabelSpec(
        "other",
        0,
        rf"{_NO}\s*(?:de\s+)?facture\s+(?:associee|d'origine|originale|initiale|rectifiee)"
        rf"|(?:original|related|corrected|credited|referenced?)\s+invoice\s*{_NO}?"
        r"|bezugsrechnung|ursprungsrechnung|ursprungliche\s+rechnung",
    ),
    LabelSpec(
        "other",
        0,
        rf"(?:customer|client|kunden?|klant|order|auftrags?|bestell|commande|purchase\s*order"
        rf"|po|delivery|liefer(?:schein)?|bon\s+de\s+(?:commande|livraison)|debitoren|kreditoren"
        rf"|vertrags?|contract|contrat|project|projekt|account|konto|ust|tax|vat|tva|btw)"
        rf"\s*-?\s*{_NO}|kundennummer|kundennr\.?|auftragsnummer|bestellnummer|debitorennummer"
        r"|klantnummer|ordernummer|leasingnummer|vertragsnummer|your\s+reference|ihre\s+referenz",
    ),
]

INVOICE_DATE = [
    LabelSpec(
        "invoice_date",
        3,
        r"invoice\s*date|date\s*of\s*(?:invoice|issue)|issue\s*date|date\s*issued|issued\s*on"
        r"|billing\s*date|rechnungs?\s*-?\s*datum|belegdatum|ausstellungsdatum"
        r"|datum\s*der\s*rechnung|date\s*(?:de\s*(?:la\s*)?)?factur(?:e|ation)"
        r"|date\s*d'emission|factuur\s*-?\s*datum|datum\s*factuur|data\s*(?:della\s*)?fattura"
        r"|data\s*(?:del\s*)?documento|data\s*emissione|fecha\s*(?:de\s*)?(?:la\s*)?factura"
        r"|fecha\s*(?:de\s*)?emision|fecha\s*expedicion",
    ),
    LabelSpec("invoice_date", 2, r"date|datum|dated|fecha|data"),
    # The date of a letter: "München, den 01.11.2024", "Paris, le 31 décembre 2018".
    LabelSpec("invoice_date", 2.5, r"(?<=, )(?:den|le)"),
]

DUE_DATE = [
    LabelSpec(
        "due_date",
        3,
        r"due\s*date|date\s*due|payment\s*due(?:\s*date)?|due\s*(?:on|by)|pay(?:able)?\s*by"
        r"|faellig(?:keit|keitsdatum)?(?:\s*am)?|fallig(?:keit|keitsdatum)?(?:\s*am)?"
        r"|zahlbar\s*(?:bis|am)|zahlungsziel|bis\s*(?:zum|spatestens)|date\s*d'echeance"
        r"|echeance|a\s*regler\s*avant|payable\s*avant|vervaldatum|vervaldag"
        r"|uiterste\s*betaaldatum|te\s*betalen\s*voor|betalen\s*voor",
    ),
]

# Dates that are not the issue date; matching them keeps the fallback from picking them.
OTHER_DATES = [
    LabelSpec(
        "other_date",
        0,
        r"(?:delivery|shipment|ship|shipping|service|order|performance|supply|tax\s*point"
        r"|print(?:ed)?|start|end|value)\s*date|date\s*of\s*(?:delivery|supply|service|order)"
        r"|liefer\s*-?\s*datum|leistungs\s*-?\s*datum|leistungszeitraum|bestell\s*-?\s*datum"
        r"|auftrags\s*-?\s*datum|druck\s*-?\s*datum|date\s*de\s*(?:livraison|commande|debut|fin)"
        r"|date\s*de\s*(?:debut|fin)\s*de\s*prestation|date\s*(?:debut|fin)"
        r"|date\s*de\s*facture\s*associee|leverdatum|leveringsdatum|besteldatum|orderdatum"
        r"|periode|period|zeitraum|geburtsdatum|date\s*of\s*birth",
    ),
]

TOTAL = [
    LabelSpec(
        "total",
        3,
        rf"grand\s*total|invoice\s*total|total\s*invoice|total\s*amount|total\s*(?:\S+\s*)?{_INCL}"
        rf"\s*(?:of\s*)?(?:\S+\s*)?{_TAXWORD}|amount\s*{_INCL}\s*{_TAXWORD}|total\s*(?:\(?eur\)?\s*)?"
        r"t\.?t\.?c\.?|montant\s*(?:total\s*)?t\.?t\.?c\.?|net\s*ttc|total\s*general"
        r"|gesamtbetrag|gesamtsumme|rechnungsbetrag|rechnungs?summe\s*brutto|bruttobetrag"
        r"|brutto\s*(?:betrag|summe|gesamt)|gesamt\s*brutto|summe\s*brutto|endbetrag|endsumme"
        r"|summe\s*gesamt|gesamt\s*summe|totaal\s*(?:incl\.?|inclusief)\s*(?:btw)?|totaalbedrag"
        r"|factuurbedrag|factuur\s*totaal|bedrag\s*incl\.?\s*btw"
        r"|(?:gesamt|rechnungs?)\s*-?\s*(?:betrag|summe)\s*brutto|montant\s*total\s*brut"
        r"|total\s*brut|gross\s*(?:total|amount)|total\s*gross|totale\s*(?:fattura|documento"
        r"|generale|complessivo|da\s*pagare)|importe\s*total|total\s*(?:factura|a\s*pagar)"
        r"|total\s*(?:con\s*)?iva\s*incluido|saldo\s*leistungen|total\s*charges",
    ),
    LabelSpec(
        "total",
        2,
        r"total|totaal|summe|gesamt|brutto|rechnungssumme|montant\s*total|totale|importe",
    ),
]

AMOUNT_DUE = [
    LabelSpec(
        "amount_due",
        2,
        r"amount\s*due|balance\s*due|total\s*due|amount\s*payable|amount\s*to\s*pay|balance"
        r"|net\s*a\s*payer|reste\s*a\s*payer|montant\s*a\s*payer|total\s*a\s*payer|a\s*payer"
        r"|zahlbetrag|zu\s*zahlen(?:der\s*betrag)?|offener\s*betrag|restbetrag|noch\s*offen"
        r"|te\s*betalen(?:\s*bedrag)?|nog\s*te\s*betalen|openstaand(?:\s*bedrag)?",
    ),
]

PREPAID = [
    LabelSpec(
        "prepaid",
        2,
        r"acompte|deja\s*(?:paye|regle|verse)|prepaid|prepayment|amount\s*paid|paid"
        r"|anzahlung|bereits\s*(?:bezahlt|gezahlt)|abschlagszahlung|voorschot|reeds\s*betaald",
    ),
]

SUBTOTAL = [
    LabelSpec(
        "subtotal",
        3,
        rf"sub\s*-?\s*total|zwischensumme|nettobetrag|netto\s*betrag|nettosumme|summe\s*netto"
        rf"|gesamt\s*netto|netto\s*gesamt|rechnungs?summe\s*netto|warenwert|total\s*(?:\(?eur\)?\s*)?"
        rf"h\.?t\.?|total\s*hors\s*tax(?:e|es)?|montant\s*(?:total\s*)?h\.?t\.?|sous\s*-?\s*total"
        rf"|subtotaal|totaal\s*{_EXCL}\s*(?:btw)?|total\s*(?:\S+\s*)?{_EXCL}\s*(?:of\s*)?{_TAXWORD}?"
        rf"|total\s*(?:net|before\s*tax)|net\s*(?:amount|total)|amount\s*{_EXCL}\s*{_TAXWORD}"
        r"|taxable\s*amount|total\s*net\s*amount"
        r"|(?:gesamt|rechnungs?)\s*-?\s*(?:betrag|summe)\s*netto|montant\s*total\s*net"
        r"|summe\s*der\s*positionen|(?:totale\s*)?imponibile|base\s*imponible|subtotale"
        r"|importe\s*neto|total\s*(?:sin|antes\s*de)\s*iva",
    ),
    LabelSpec(
        "subtotal",
        2,
        r"netto|base\s*(?:tva|ht|imposable)|grondslag|bemessungsgrundlage|neto",
    ),
    # "Net" alone is also "30 days net": weak, and only ever taken when the sums agree.
    LabelSpec("subtotal", 1.5, r"net"),
]

TAX = [
    LabelSpec(
        "tax",
        3,
        rf"total\s*{_TAXWORD}|{_TAXWORD}\s*(?:total|gesamt|amount|betrag|bedrag)"
        rf"|(?:ust|mwst|steuer)\s*\.?\s*-?\s*betrag|summe\s*(?:mwst|ust|steuern?)"
        r"|montant\s*(?:de\s*(?:la\s*)?)?tva|tax\s*amount|sales\s*tax|totaal\s*btw|btw\s*bedrag"
        r"|steuerbetrag|umsatzsteuer\s*gesamt|mehrwertsteuer\s*gesamt"
        r"|(?:gesamt|rechnungs?)\s*-?\s*(?:betrag|summe)\s*(?:steuer|mwst|ust|umsatzsteuer)"
        r"|totale\s*(?:iva|imposta)|importe\s*(?:del\s*)?iva|cuota\s*(?:de\s*)?iva"
        r"|total\s*taxes?|taxes",
    ),
    LabelSpec("tax", 2, _TAXWORD),
]

# Tax identifiers, rates and notes: matching them stops "VAT"/"TVA" from reading as amounts.
TAX_OTHER = [
    LabelSpec(
        "other",
        0,
        rf"{_TAXWORD}\s*-?\s*(?:reg(?:istration)?\.?|id(?:ent(?:ification|ifier)?)?|{_NO}|code"
        r"|clause|exempt\w*|rate|satz|taux|identifier|%|acquittee|sur|on|percentage|tarief)"
        r"|ust\s*-?\s*id\s*-?\s*nr\.?|ust\s*-?\s*idnr\.?|umsatzsteuer\s*-?\s*id\w*"
        rf"|steuer\s*-?\s*(?:{_NO}|id|nummer)|steuernummer|{_NO}\s*(?:de\s*)?tva"
        r"|numero\s*(?:de\s*)?tva|tva\s*intra\w*|btw\s*-?\s*(?:nr|nummer|id)\.?|tax\s*id"
        r"|vat\s*id|vat\s*reg\w*|siret|siren|kvk|code\s*tva|detail\s*tva|taux\s*tva",
    ),
]

SELLER = [
    LabelSpec(
        "seller",
        3,
        r"seller(?:\s*trade)?(?:\s*name)?|vendor(?:\s*name)?|vendeur|supplier|fournisseur"
        r"|lieferant|verkaufer|verkaeufer|leverancier|verkoper|bill\s*from|issued\s*by|from:"
        r"|emetteur|rechnungssteller|absender|raison\s*sociale\s*du\s*vendeur",
    ),
]

CUSTOMER = [
    LabelSpec(
        "customer",
        3,
        r"bill\s*to|billed\s*to|invoice\s*to|sold\s*to|customer|client|buyer|acheteur|kunde"
        r"|rechnungsempfanger|rechnungsadresse|empfanger|klant|factuuradres|afnemer"
        r"|adresse\s*(?:du\s*)?client|adresse\s*de\s*facturation|destinataire|to:|koper|kaufer"
        r"|name\s*(?:&|und|and|et)\s*(?:adresse|anschrift|address)|rechnungsanschrift"
        r"|guest(?:\s*name)?|gast(?:name)?|intestatario|destinatario|cliente|facturar\s*a",
    ),
    LabelSpec(
        "ship_to",
        1,
        r"ship\s*to|deliver\s*to|delivery\s*address|lieferadresse|lieferanschrift"
        r"|livraison(?:\s*:)?(?:\s*adresse)?|adresse\s*de\s*livraison|afleveradres",
    ),
]

CUSTOMER_OTHER = [
    LabelSpec(
        "other",
        0,
        rf"(?:customer|client|kunden?|klant)\s*-?\s*(?:{_NO}|id|ref\w*|code|nummer)"
        rf"|{_NO}\s*(?:de\s*)?client|kundennummer|kundennr\.?|klantnummer|klantnr\.?"
        r"|vos\s*identifiants|nos\s*references",
    ),
]

ALL_LABELS: list[LabelSpec] = [
    *INVOICE_NUMBER,
    *OTHER_NUMBERS,
    *INVOICE_DATE,
    *DUE_DATE,
    *OTHER_DATES,
    *TOTAL,
    *AMOUNT_DUE,
    *PREPAID,
    *SUBTOTAL,
    *TAX,
    *TAX_OTHER,
    *SELLER,
    *CUSTOMER,
    *CUSTOMER_OTHER,
]

AMOUNT_FIELDS = frozenset({"total", "amount_due", "subtotal", "tax", "prepaid"})
DATE_FIELDS = frozenset({"invoice_date", "due_date", "other_date"})

LEGAL_FORM = (
    r"(?<![a-z])(?:gmbh|ag|kg|ug|ohg|gbr|e\.\s?k\.|mbh|kgaa|se|ltd\.?|limited|llc|l\.l\.c\.|inc\.?"
    r"|corp\.?|corporation|co\.|company|plc|llp|lp|sarl|s\.a\.r\.l\.|sas|s\.a\.s\.|sasu|sa|s\.a\."
    r"|eurl|sci|snc|bv|b\.v\.|nv|n\.v\.|vof|v\.o\.f\.|cv|oy|ab|as|a/s|aps|srl|s\.r\.l\.|spa"
    r"|s\.p\.a\.|sl|s\.l\.|pty|gesellschaft|societe\s+anonyme)(?![a-z])"
)
