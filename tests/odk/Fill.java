// Fills an XForm with JavaRosa (ODK Collect's engine, inside pyxform's
// ODK_Validate.jar), the way a person steps through it in Collect, and
// prints the instance Collect would send. Written for tests/it/odk_xform.rs.
//
//   javac -cp ODK_Validate.jar Fill.java
//   java -cp ODK_Validate.jar:. Fill FORM.xml ANSWERS.tsv [MEDIA_DIR]
//
// MEDIA_DIR holds the form's attachments (a follow-up's case list,
// jr://file-csv/cases.csv), as Collect keeps them beside the form.
//
// ANSWERS.tsv: one "Q|H<TAB>path<TAB>value" a line; every step of a path
// carries its 1-based position (/data[1]/child[1]/siblings[2]/name[1]). Q
// answers a question as a person would; a repeat item is added when an
// answer lies inside it. H sets a hidden value (a reference entities will
// fill) in the instance after the walk. Exit 3 when an answer was refused
// (constraint, type) or never asked (not relevant): the form and the
// answers disagree.
import java.io.FileInputStream;
import java.nio.file.*;
import java.util.*;
import org.javarosa.core.model.Constants;
import org.javarosa.core.model.FormDef;
import org.javarosa.core.model.FormIndex;
import org.javarosa.core.model.SelectChoice;
import org.javarosa.core.model.data.*;
import org.javarosa.core.model.data.helper.Selection;
import org.javarosa.core.model.instance.InstanceInitializationFactory;
import org.javarosa.core.model.instance.TreeElement;
import org.javarosa.core.model.instance.TreeReference;
import org.javarosa.core.reference.PrefixedRootFactory;
import org.javarosa.core.reference.Reference;
import org.javarosa.core.reference.ReferenceManager;
import org.javarosa.core.services.IPropertyManager;
import org.javarosa.core.services.PropertyManager;
import org.javarosa.core.services.properties.IPropertyRules;
import org.javarosa.form.api.*;
import org.javarosa.model.xform.XFormSerializingVisitor;
import org.javarosa.xform.util.XFormUtils;

public class Fill {
  static String path(TreeReference ref) {
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < ref.size(); i++) {
      int mult = ref.getMultiplicity(i);
      b.append('/').append(ref.getName(i)).append('[').append(Math.max(mult, 0) + 1).append(']');
    }
    return b.toString();
  }

  static Selection choice(FormEntryPrompt p, String v) {
    for (SelectChoice s : p.getSelectChoices()) if (s.getValue().equals(v)) return s.selection();
    throw new IllegalArgumentException("no choice " + v);
  }

  static void setHidden(TreeElement e, String parent, Map<String, String> hidden) {
    if (e.getMult() == TreeReference.INDEX_TEMPLATE) return;   // a repeat's template, not an item
    String here = parent + "/" + e.getName() + "[" + (Math.max(e.getMult(), 0) + 1) + "]";
    String v = hidden.remove(here);
    if (v != null) e.setAnswer(new StringData(v));
    for (int i = 0; i < e.getNumChildren(); i++) setHidden(e.getChildAt(i), here, hidden);
  }

  /** What Collect's property manager gives the deviceid preload. */
  static class Properties implements IPropertyManager {
    public List<String> getProperty(String name) { String v = getSingularProperty(name); return v == null ? null : List.of(v); }
    public void setProperty(String name, String value) {}
    public void setProperty(String name, List<String> values) {}
    public String getSingularProperty(String name) { return "deviceid".equals(name) ? "javarosa-fill" : null; }
    public void addRules(IPropertyRules rules) {}
    public List<IPropertyRules> getRules() { return List.of(); }
  }

  /** jr://file-csv/NAME and jr://file/NAME: the file NAME of a directory. */
  static class Media extends PrefixedRootFactory {
    final Path dir;
    Media(Path dir) { super(new String[] {"jr://file-csv/", "jr://file/"}); this.dir = dir; }
    protected Reference factory(String terminal, String uri) {
      Path file = dir.resolve(terminal);
      return new Reference() {
        public boolean doesBinaryExist() { return Files.exists(file); }
        public java.io.InputStream getStream() throws java.io.IOException { return Files.newInputStream(file); }
        public String getURI() { return uri; }
        public String getLocalURI() { return file.toString(); }
        public boolean isReadOnly() { return true; }
        public java.io.OutputStream getOutputStream() { throw new UnsupportedOperationException(); }
        public void remove() {}
        public Reference[] probeAlternativeReferences() { return new Reference[0]; }
      };
    }
  }

  public static void main(String[] a) throws Exception {
    PropertyManager.setPropertyManager(new Properties());
    if (a.length > 2) ReferenceManager.instance().addReferenceFactory(new Media(Path.of(a[2])));
    FormDef fd = XFormUtils.getFormFromInputStream(new FileInputStream(a[0]));
    fd.initialize(true, new InstanceInitializationFactory());
    Map<String, String> answers = new LinkedHashMap<>();
    Map<String, String> hidden = new LinkedHashMap<>();
    for (String line : Files.readAllLines(Path.of(a[1]))) {
      if (line.isEmpty()) continue;
      String[] kv = line.split("\t", 3);
      String value = kv[2].replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\");
      (kv[0].equals("H") ? hidden : answers).put(kv[1], value);
    }
    Set<String> asked = new HashSet<>();
    boolean bad = false;
    FormEntryModel m = new FormEntryModel(fd);
    FormEntryController c = new FormEntryController(m);
    // A question may apply only after a later answer (a rule naming a field
    // further down): like a person sent back by Collect's check at the end,
    // walk the form again while that answers more.
    for (int pass = 0, before = -1; pass < 5 && asked.size() != before; pass++) {
      before = asked.size();
      c.jumpToIndex(FormIndex.createBeginningOfFormIndex());
      for (int ev = c.stepToNextEvent(); ev != FormEntryController.EVENT_END_OF_FORM; ev = c.stepToNextEvent()) {
        String ref = path(m.getFormIndex().getReference());
        if (ev == FormEntryController.EVENT_PROMPT_NEW_REPEAT) {
          String inside = ref + "/";
          if (answers.keySet().stream().anyMatch(k -> k.startsWith(inside))) c.newRepeat();
        } else if (ev == FormEntryController.EVENT_QUESTION) {
          String v = answers.get(ref);
          if (v == null || asked.contains(ref)) continue;
          asked.add(ref);
          FormEntryPrompt p = m.getQuestionPrompt();
          IAnswerData d = switch (p.getDataType()) {
            case Constants.DATATYPE_INTEGER -> new IntegerData(Integer.parseInt(v));
            case Constants.DATATYPE_DECIMAL -> new DecimalData(Double.parseDouble(v));
            case Constants.DATATYPE_DATE -> new DateData(java.sql.Date.valueOf(v));
            case Constants.DATATYPE_DATE_TIME -> new DateTimeData(Date.from(java.time.OffsetDateTime.parse(v).toInstant()));
            case Constants.DATATYPE_CHOICE -> new SelectOneData(choice(p, v));
            case Constants.DATATYPE_CHOICE_LIST -> new SelectMultiData(Arrays.stream(v.split(" ")).map(x -> choice(p, x)).toList());
            default -> new StringData(v);
          };
          int r = c.answerQuestion(d, true);
          if (r != FormEntryController.ANSWER_OK) {
            bad = true;
            System.err.println(ref + " = " + v + (r == FormEntryController.ANSWER_CONSTRAINT_VIOLATED ? ": CONSTRAINT VIOLATED" : ": REQUIRED BUT EMPTY"));
          }
        }
      }
    }
    for (String k : answers.keySet()) if (!asked.contains(k)) { bad = true; System.err.println(k + ": NOT ASKED"); }
    setHidden(fd.getMainInstance().getRoot(), "", hidden);
    for (String k : hidden.keySet()) { bad = true; System.err.println(k + ": NO SUCH HIDDEN VALUE"); }
    System.out.println(new String(new XFormSerializingVisitor().serializeInstance(fd.getInstance()), "UTF-8"));
    if (bad) System.exit(3);
  }
}
